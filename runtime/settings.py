"""Service settings: one pydantic-settings class per service, read from its command line
(`--kebab-case` flags), then `CORE2_*` environment variables, then the defaults. A bad value
is refused naming the flag, with exit status 2."""

import sys
from typing import TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, CliSettingsSource, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORE2_", extra="ignore",
                                      populate_by_name=True)

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")


def env_name(flag: str, env: str) -> AliasChoices:
    """For a setting whose environment variable predates the CORE2_ prefix (KAFKA_*)."""
    return AliasChoices(flag, env)


def load(cls: type[S], prog: str, argv: list[str] | None = None) -> S:
    source: CliSettingsSource[S] = CliSettingsSource(
        cls, cli_prog_name=prog, cli_kebab_case=True, cli_implicit_flags=True)
    try:
        return CliApp.run(cls, cli_args=sys.argv[1:] if argv is None else argv,
                          cli_settings_source=source)
    except ValidationError as e:
        for err in e.errors():
            flag = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            print(f"{prog}: {flag}: {err['msg']}", file=sys.stderr)
        sys.exit(2)
