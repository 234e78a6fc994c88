"""Service settings: one pydantic-settings class per service, read from its command line
(`--kebab-case` flags), then `CORE2_*` environment variables (`KAFKA_*` for the Kafka
settings, as before the prefix), then the defaults. A bad value is refused naming the flag,
with exit status 2."""

import sys
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

S = TypeVar("S", bound=BaseSettings)


class _KafkaEnv(EnvSettingsSource):
    """KAFKA_BOOTSTRAP and friends: the Kafka settings' variables carry no CORE2_ prefix."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls, env_prefix="")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not field_name.startswith("kafka_"):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORE2_", extra="ignore")

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR (or CORE2_LOG_LEVEL)")

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _KafkaEnv(settings_cls), file_secret_settings


def load(cls: type[S], prog: str, argv: list[str] | None = None) -> S:
    """Settings from `argv` (default sys.argv[1:]) and the environment, or exit 2 naming
    the bad flag."""
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
