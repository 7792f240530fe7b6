"""Settings in slices: one variable per setting, documented once, read into its slice."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpipe.env_example import README, render, render_table, with_table
from shared.settings import Settings, every_setting, setting

ROOT = Path(__file__).resolve().parents[3]


def test_every_setting_has_a_description_and_its_own_variable() -> None:
    settings = list(every_setting())
    assert all(each.field.description for each in settings), [
        each.path for each in settings if not each.field.description
    ]
    variables = [each.variable for each in settings]
    assert len(variables) == len(set(variables))


def test_the_env_example_and_the_readme_table_are_generated_and_current() -> None:
    assert (ROOT / ".env.example").read_text() == render(), "run `callpipe env-example --write`"
    readme = (ROOT / README).read_text()
    assert render_table() in readme, "run `callpipe env-example --write`"
    assert with_table(readme) == readme


def test_the_readme_table_names_every_variable_with_its_default() -> None:
    table = render_table()
    for each in every_setting():
        assert f"| `{each.variable}` |" in table, each.path
    assert "| `CALLPIPE_DOWNLOAD_MAX_BYTES` | `1073741824` |" in table
    assert "| `TWILIO_AUTH_TOKEN` | a local default |" in table


def test_each_variable_lands_in_its_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLPIPE_KAFKA_PARTITIONS", "6")
    monkeypatch.setenv("CALLPIPE_RECORDING_MODE", "rest")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-twilio-name")
    monkeypatch.setenv("CALLPIPE_DOWNLOADER_HEALTH_PORT", "9101")
    settings = Settings()
    assert settings.kafka.partitions == 6
    assert settings.ingress.recording_mode == "rest"
    assert settings.twilio.auth_token.get_secret_value() == "from-twilio-name"
    assert settings.downloader.health_port == 9101
    assert setting("kafka.partitions").is_set(settings)
    assert not setting("kafka.bootstrap").is_set(settings)


def test_a_slice_given_in_part_keeps_the_environments_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLPIPE_KAFKA_PARTITIONS", "6")
    settings = Settings(kafka={"bootstrap": "broker:9092"})
    assert (settings.kafka.bootstrap, settings.kafka.partitions) == ("broker:9092", 6)


def test_updated_changes_only_what_it_names() -> None:
    before = Settings()
    after = before.updated(kafka={"partitions": 4}, data_dir=Path("/srv/callpipe"))
    assert (after.kafka.partitions, after.data_dir) == (4, Path("/srv/callpipe"))
    assert after.kafka.bootstrap == before.kafka.bootstrap
    assert after.player == before.player
    assert before.kafka.partitions == Settings().kafka.partitions


def test_a_value_out_of_range_is_refused_with_its_variable_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLPIPE_DOWNLOAD_PART_BYTES", "1024")
    with pytest.raises(ValueError, match="part_bytes"):
        Settings()
