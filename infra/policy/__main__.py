"""core2 policy pack: `pulumi preview --policy-pack infra/policy`. The rules live in
rules.py (plain functions, unit-tested against the captured stack resources)."""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.policy.pack import policies

PolicyPack(name="core2", enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
