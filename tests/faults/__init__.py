"""The fault campaign: kill/resume, corrupt inputs, fuzz and DDP kills (see harness/ and
scripts/fault_campaign.py, which runs the same campaign at full size)."""
