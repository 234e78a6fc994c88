"""Apache Kafka's setup: the broker kinds and `core2 up --kafka apache` without the jars."""

import uuid

import pytest

from runtime import cli, kafka_apache
from runtime.broker import start_kafka
from runtime.kafka import FETCH_WAIT_MS
from runtime.local.config import LocalConfig


def test_up_without_the_jars_says_to_run_scripts_tools(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kafka_apache, "LIB", tmp_path / "no-such-lib")
    code = cli.main(["--run-dir", str(tmp_path / "run"), "up", "--kafka", "apache"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Apache Kafka's jars are not in" in err and "run scripts/tools" in err
    assert not (tmp_path / "run" / "state.json").exists()  # nothing was started


def test_fetch_wait_follows_the_broker(monkeypatch):
    monkeypatch.setitem(FETCH_WAIT_MS, "apache", 7)
    assert LocalConfig().fetch_wait_ms() == FETCH_WAIT_MS["embedded"]
    assert LocalConfig(kafkaBroker="apache").fetch_wait_ms() == 7
    assert LocalConfig(kafkaBootstrap="k:9092").fetch_wait_ms() == 7  # taken for a real Kafka
    assert LocalConfig(kafkaBroker="apache", kafkaFetchWaitMs=20).fetch_wait_ms() == 20


def test_an_unknown_broker_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'tansu': expected one of embedded, apache"):
        start_kafka("tansu", tmp_path)


def test_cluster_ids_never_look_like_an_option(monkeypatch):
    """The storage tool reads an id starting with '-' as an option (a start in 64 failed)."""
    ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(kafka_apache.uuid, "uuid4", lambda: next(ids))
    assert kafka_apache.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"  # the '-' one skipped
