"""Run the real Pulumi engine on the core2 program: `python -m tests.cluster.engine WORKDIR
STACK preview|up|destroy [--diff] [--policy-pack DIR]`.

WORKDIR holds a Pulumi.yaml and stacks/Pulumi.<STACK>.yaml (copies a test may edit, as a pull
request would). The Pulumi CLI from scripts/tools plans and applies; the program runs through
the Automation API's inline language server, because the Go module proxy does not serve the
`pulumi-language-python` host (see README, "Cluster tools"). The state lives in a file backend
and nothing reaches the network. The CLI's own output is printed as it runs.
"""

import argparse
import os
import sys
from pathlib import Path

import pulumi.automation as auto

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
PASSPHRASE = "core2-test-passphrase"


def engine_env(state_dir: Path) -> dict[str, str]:
    """The environment every Pulumi command of the tests runs with."""
    return {
        "PULUMI_BACKEND_URL": f"file://{state_dir}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_HOME": str(TOOLS / "pulumi-home"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
        # dynamic providers and the policy analyzer run with this interpreter and import the
        # project's packages
        "PULUMI_PYTHON_CMD": sys.executable,
        "PYTHONPATH": str(ROOT),
    }


def stack(workdir: Path, name: str) -> auto.Stack:
    from infra.program import main as program

    env = engine_env(workdir / "state")
    (workdir / "state").mkdir(exist_ok=True)
    os.environ.update(env)  # the inline program reads nothing from it; the CLI does
    command = auto.PulumiCommand(root=str(TOOLS), skip_version_check=True)
    return auto.create_or_select_stack(
        stack_name=name, project_name="core2", program=program,
        opts=auto.LocalWorkspaceOptions(work_dir=str(workdir), pulumi_command=command,
                                        env_vars=env))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("stack")
    parser.add_argument("op", choices=["preview", "up", "destroy", "refresh"])
    parser.add_argument("--diff", action="store_true")
    parser.add_argument("--policy-pack", action="append", default=[])
    parser.add_argument("--expect-no-changes", action="store_true")
    args = parser.parse_args()
    s = stack(args.workdir.resolve(), args.stack)
    out = {"on_output": lambda line: print(line, end="" if line.endswith("\n") else "\n",
                                           flush=True)}
    try:
        if args.op == "preview":
            result = s.preview(diff=args.diff, policy_packs=args.policy_pack,
                               expect_no_changes=args.expect_no_changes, **out)
            print(f"CHANGES {dict(result.change_summary)}")
        elif args.op == "up":
            result = s.up(diff=args.diff, policy_packs=args.policy_pack, **out)
            print(f"CHANGES {dict(result.summary.resource_changes or {})}")
        elif args.op == "refresh":
            s.refresh(**out)
        else:
            s.destroy(**out)
    except auto.CommandError as err:
        print(f"ENGINE FAILED\n{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
