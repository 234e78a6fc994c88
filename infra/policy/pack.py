"""The rules of rules.py as Pulumi policies (the entry point only builds the pack)."""

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from infra.policy.rules import RESOURCE_RULES, STACK_RULES


def _resource_policy(name: str, description: str, rule) -> ResourceValidationPolicy:
    def validate(args, report_violation):
        for message in rule(args.resource_type, args.props):
            report_violation(message)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY)


def _stack_policy(name: str, description: str, rule) -> StackValidationPolicy:
    def validate(args, report_violation):
        for message in rule([(r.resource_type, r.props) for r in args.resources]):
            report_violation(message)

    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 enforcement_level=EnforcementLevel.MANDATORY)


def policies() -> list:
    return [*(_resource_policy(n, d, r) for n, (d, r) in RESOURCE_RULES.items()),
            *(_stack_policy(n, d, r) for n, (d, r) in STACK_RULES.items())]
