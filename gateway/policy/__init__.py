"""Governance: who may call what (CEL rules), quotas that hold across the fleet, lists filtered per principal."""
