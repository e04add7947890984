"""The department catalogue: TOML mappings checked against the Avro schemas at start-up."""

from __future__ import annotations

import pytest

from streams.core.catalogue import AvscFolder, load_catalogue
from streams.errors import ConfigError
from streams.settings import get_settings

VALID = """
[department]
dept = "market"
name_zh = "市场监管局"
kind = "postgres"
slot = "yurong_market"

[datasets.enterprise_registration]
table = "public.enterprise_registration"
key = ["uscc"]
required = ["uscc", "name", "status"]
dates = ["established_date"]
[datasets.enterprise_registration.enums]
status = ["active", "revoked"]
[datasets.enterprise_registration.pii]
legal_rep_phone = "phone"
"""


def test_real_catalogue_loads(catalogue):
    market = catalogue.department("market")
    assert market.kind == "postgres"
    assert market.options["publication"] == "yurong_market"
    assert set(market.datasets) == {"enterprise_registration", "abnormal_operation", "equity_pledge"}
    reg = catalogue.dataset("market.enterprise_registration")
    assert reg.topic == "dept.market.enterprise_registration"
    assert reg.schema_name == "dept/market/enterprise_registration"
    assert reg.schema_table == "enterprise_registration"
    assert {r.field: r.pii_class for r in reg.masking.rules} == {
        "legal_rep_name": "person_name", "legal_rep_id_number": "id_number", "legal_rep_phone": "phone", "address": "address",
    }
    assert {"dept.market.enterprise_registration", "dept.market.abnormal_operation"} <= set(catalogue.by_topic())
    # DESIGN §5: 14 departments, 23 datasets
    assert len(catalogue.departments) == 14 and len(catalogue.by_topic()) == 23


def test_every_simulated_department_dataset_has_a_schema(catalogue, schemas):
    for ds in catalogue.by_topic().values():
        assert ds.schema_name in schemas.names()


@pytest.mark.parametrize(
    "lookup, fragment",
    [
        (lambda c: c.dataset("market.nope"), "market.nope"),
        (lambda c: c.dataset("nodept.some_dataset"), "nodept.some_dataset"),
        (lambda c: c.department("nope"), "known: "),
    ],
)
def test_unknown_names_are_config_errors(catalogue, lookup, fragment):
    with pytest.raises(ConfigError, match=fragment):
        lookup(catalogue)


def test_valid_tmp_mapping_loads(tmp_path, schemas):
    (tmp_path / "market.toml").write_text(VALID, encoding="utf-8")
    cat = load_catalogue(mappings_dir=tmp_path, schemas=schemas)
    assert cat.dataset("market.enterprise_registration").enums == {"status": ("active", "revoked")}


@pytest.mark.parametrize(
    "file, old, new, fragments",
    [
        ("market.toml", 'required = ["uscc", "name", "status"]', 'required = ["uscc", "nmae"]', ["not in schema", "nmae"]),
        ("market.toml", 'dates = ["established_date"]', 'dates = ["founded"]', ["not in schema", "founded"]),
        ("market.toml", 'status = ["active", "revoked"]', 'state = ["active"]', ["not in schema", "state"]),
        ("market.toml", 'legal_rep_phone = "phone"', 'legal_rep_mobile = "phone"', ["not in schema", "legal_rep_mobile"]),
        ("market.toml", 'legal_rep_phone = "phone"', 'legal_rep_phone = "fone"', ["unknown PII class", "fone", "legal_rep_phone"]),
        ("market.toml", 'kind = "postgres"', 'kind = "oracle"', ["oracle", "postgres, mysql, polling, file"]),
        ("tax.toml", "", "", ["'tax'", "'market'"]),
        ("market.toml", "[datasets.enterprise_registration]", "[datasets.enterprise_registraton]",
         ["enterprise_registraton", "no Avro schema"]),
        ("market.toml", 'key = ["uscc"]', "", ["'table' and 'key'"]),
        ("market.toml", 'name_zh = "市场监管局"', 'name_zh = "市场监管局', ["not valid TOML"]),
    ],
    ids=["required", "dates", "enum", "pii-field", "pii-class", "kind", "dept-vs-file", "dataset-schema", "no-key", "toml"],
)
def test_broken_mapping_is_a_config_error_naming_file_and_problem(tmp_path, schemas, file, old, new, fragments):
    assert old in VALID
    (tmp_path / file).write_text(VALID.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_catalogue(mappings_dir=tmp_path, schemas=schemas)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message
    # With one mapping per department, the operator must learn which file to fix.
    assert file in message


def test_mapping_without_datasets_is_a_config_error(tmp_path, schemas):
    (tmp_path / "market.toml").write_text(VALID.split("[datasets")[0], encoding="utf-8")
    with pytest.raises(ConfigError, match="no \\[datasets"):
        load_catalogue(mappings_dir=tmp_path, schemas=schemas)


def test_the_schema_files_alone_give_the_catalogue_the_codec_gives(schemas):
    """The core reads the ``.avsc`` files as JSON (no Avro codec below the codecs layer); the
    shipped mappings load to the same catalogue as with the codecs' parsed schemas."""
    assert load_catalogue(schemas=AvscFolder(get_settings().paths.avro_dir)) == load_catalogue(schemas=schemas)
