"""Avro single-object encoding (C3 01 + CRC-64-AVRO fingerprint + body) over the repo's avro/ folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codecs.serde import MAGIC, SchemaStore
from streams.errors import ConfigError, DecodeError, SchemaMismatchError

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UTC = dt.UTC

SOURCE = {
    "connector": "postgresql", "dept": "market", "db": "market", "schema": "public",
    "table": "enterprise_registration", "position": "0/16B3748", "seq": 0x16B3748,
    "ts_ms": 1_709_294_400_123, "snapshot": "false", "tx_id": 771,
}
REGISTRATION_ROW = {
    "uscc": "91110000600037341L", "name": "重庆某某科技有限公司", "legal_rep_name": "张三丰",
    "legal_rep_id_number": "34052419800101001X", "legal_rep_phone": "13812345678",
    "district_code": "500103", "industry_code": "I6513", "registered_capital": 500.0,
    "established_date": dt.date(2015, 6, 1), "status": "active", "address": "重庆市渝中区解放碑88号",
    "updated_at": dt.datetime(2024, 3, 1, 4, 0, 0, 123000, tzinfo=UTC),
}
ABNORMAL_ROW = {
    "id": 42, "uscc": "91110000600037341L", "reason_code": "unreachable_address",
    "listed_date": dt.date(2024, 2, 1), "authority": "渝中区市场监管局", "removed_date": None,
    "removal_reason": None, "updated_at": None,
}
CHANGE = {
    "change_id": "market.enterprise_registration:1:91110000600037341L/STATUS_REVOKED",
    "uscc": "91110000600037341L", "category": "registration", "severity": "critical",
    "reason_codes": ["STATUS_REVOKED"], "before": {"status": "active"}, "after": {"status": "revoked", "x": None},
    "score_before": 850, "score_after": 100, "level_before": "A", "level_after": "E",
    "source_dataset": "market.enterprise_registration", "source_position": "0/16B3748", "source_seq": 23_803_720,
    "event_ts_ms": 1_709_294_400_123, "detected_ts_ms": 1_709_294_401_000,
}
RECORDS = {
    "dept/hrss/social_insurance": {
        "before": None, "op": "c", "ts_ms": 1_709_294_400_500,
        "source": {**SOURCE, "connector": "mysql", "dept": "hrss", "db": "hrss", "schema": None, "table": "social_insurance",
                   "position": "0-1-42", "seq": 42, "tx_id": 9001},
        "after": {
            "uscc": "91110000600037341L", "period": "2024-02", "unit_name": "重庆某某科技有限公司", "insured_headcount": 23,
            "new_insured": 1, "terminated_insured": 0, "contribution_base": 138_000.0, "payable_amount": 50_370.0,
            "paid_amount": 50_370.0, "arrears_amount": 0.0, "arrears_months": 0, "payment_status": "paid",
            "paid_date": dt.date(2024, 3, 10), "contact_name": "王芳", "contact_phone": "13812345678",
            "agency": "重庆市渝中区社会保险事务中心", "updated_at": None,
        },
    },
    "dept/housing_fund/housing_fund_contribution": {
        "before": None, "op": "r", "ts_ms": 1_709_294_400_500,
        "source": {**SOURCE, "connector": "mysql", "dept": "housing_fund", "db": "housing_fund", "schema": None,
                   "table": "housing_fund_contribution", "position": "0-1-7", "seq": 7, "snapshot": "true", "tx_id": None},
        "after": {
            "uscc": "91110000600037341L", "period": "2024-02", "unit_account_no": "HF00603734", "depositor_count": 18,
            "deposit_base_total": 108_000.0, "contribution_rate": 0.07, "payable_amount": 15_120.0, "paid_amount": 15_120.0,
            "arrears_amount": 0.0, "status": "normal", "paid_date": dt.date(2024, 3, 15), "handler_name": "李强",
            "updated_at": dt.datetime(2024, 3, 15, 2, 0, tzinfo=UTC),
        },
    },
    "dept/power/electricity_usage": {
        "op": "u", "ts_ms": 1_709_294_400_500,
        "source": {**SOURCE, "connector": "mysql", "dept": "power", "db": "power", "schema": None, "table": "electricity_usage",
                   "position": "0-1-43", "seq": 43, "tx_id": 9002},
        "before": None,
        "after": {
            "account_no": "50123456780", "period": "2024-07", "uscc": "91110000600037341L",
            "tariff_category": "general_industrial", "voltage_level": "380V", "usage_kwh": 12_480.5, "peak_kwh": 4_300.0,
            "valley_kwh": 3_100.0, "amount": 8_486.74, "paid_amount": 0.0, "arrears_amount": 8_486.74,
            "payment_status": "overdue", "meter_read_date": dt.date(2024, 7, 28), "supply_address": "重庆市渝中区解放碑88号",
            "updated_at": None,
        },
    },
    "dept/customs/customs_trade": {
        "before": None, "op": "c", "ts_ms": 1_709_294_400_500,
        "source": {**SOURCE, "connector": "mysql", "dept": "customs", "db": "customs", "schema": None, "table": "customs_trade",
                   "position": "0-1-44", "seq": 44, "tx_id": 9003},
        "after": {
            "uscc": "91110000600037341L", "period": "2024-02", "customs_code": "5001234567", "import_value_usd": 41_000.0,
            "export_value_usd": 132_500.0, "import_declarations": 1, "export_declarations": 4, "main_hs_code": "8708",
            "main_partner": "DE", "trade_mode": "general", "updated_at": None,
        },
    },
    "dept/customs/customs_credit": {
        "before": None, "op": "c", "ts_ms": 1_709_294_400_500,
        "source": {**SOURCE, "connector": "mysql", "dept": "customs", "db": "customs", "schema": None, "table": "customs_credit",
                   "position": "0-1-45", "seq": 45, "tx_id": 9004},
        "after": {
            "uscc": "91110000600037341L", "customs_code": "5001234567", "credit_rating": "dishonest",
            "previous_rating": "registered", "rating_date": dt.date(2024, 5, 1), "valid_until": None,
            "reason": "拖欠应缴税款或罚没款项", "customs_office": "重庆海关", "updated_at": None,
        },
    },
    # --- polling and file-drop departments (connectors/polling.py, connectors/filedrop.py) ---
    "connect/file_offset": {
        "source": "water@water", "sha256": "ab" * 32, "file": "water_usage-202603.csv", "dataset": "water_usage",
        "rows": 120, "dead_lettered": 1, "ts_ms": 1_709_294_400_000,
    },
    "dept/gas/gas_usage": {
        "before": None, "after": {
            "id": 7, "uscc": "91110000600037341L", "account_no": "RQ500103000123", "billing_month": dt.date(2026, 1, 1),
            "customer_type": "commercial", "volume_m3": 1834.5, "amount": 6237.3, "arrears": 0.0, "payment_status": "paid",
            "contact_name": "李四", "contact_phone": "13812345678",
            "created_at": dt.datetime(2026, 2, 1, 1, 0, tzinfo=UTC), "updated_at": dt.datetime(2026, 2, 3, 1, 0, 0, 5000, tzinfo=UTC),
        },
        "source": {**SOURCE, "connector": "polling", "dept": "gas", "db": "gas", "table": "gas_usage",
                   "position": "2026-02-03T01:00:00.005000+00:00|7", "seq": 1_770_080_400_005_000, "tx_id": None},
        "op": "u", "ts_ms": 1_709_294_400_500,
    },
    "dept/procurement/bid_award": {
        "before": None, "after": {
            "id": 3, "uscc": "91110000600037341L", "project_code": "CQGP2026-0131", "project_name": "渝中区智慧路灯采购项目",
            "purchaser": "重庆市渝中区城市管理局", "category": "goods", "method": "open_tender", "award_amount": 1_280_000.0,
            "award_date": dt.date(2026, 3, 2), "contract_date": None, "status": "awarded", "contact_name": "王五",
            "contact_phone": "13912345678", "created_at": None, "updated_at": None,
        },
        "source": {**SOURCE, "connector": "polling", "dept": "procurement", "db": "procurement", "table": "bid_award",
                   "position": "2026-03-02T08:00:00+00:00|3", "seq": 1_772_438_400_000_000, "snapshot": "true", "tx_id": None},
        "op": "r", "ts_ms": 1_709_294_400_500,
    },
    "dept/emergency/safety_penalty": {
        "before": None, "after": {
            "id": 11, "uscc": "91110000600037341L", "decision_no": "渝应急罚〔2026〕12号", "penalty_type": "fine",
            "amount": 30000.0, "decision_date": dt.date(2026, 4, 1), "reason": "未按规定开展安全生产教育和培训",
            "legal_basis": "《安全生产法》第九十七条", "status": "effective", "responsible_person": "赵六",
            "authority": "重庆市渝中区应急管理局", "created_at": None, "updated_at": None,
        },
        "source": {**SOURCE, "connector": "polling", "dept": "emergency", "db": "emergency", "table": "safety_penalty",
                   "position": "2026-04-01T08:00:00+00:00|11", "seq": 1_775_030_400_000_000, "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/water/water_usage": {
        "before": None, "after": {
            "account_no": "SW50010300042", "billing_month": dt.date(2026, 2, 1), "uscc": "91110000600037341L",
            "volume_m3": 230.0, "amount": 1012.0, "arrears": 0.0, "payment_status": "paid",
            "contact_phone": "13812345678", "address": "重庆市渝中区解放碑88号",
        },
        "source": {**SOURCE, "connector": "filedrop", "dept": "water", "db": "water", "schema": "water_usage-202602.csv",
                   "table": "water_usage", "position": "0123456789abcdef:2", "seq": 1_709_294_400_000_000_002, "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/ip/patent": {
        "before": None, "after": {
            "application_no": "CN202310123456.7", "uscc": "91110000600037341L", "title": "一种汽车座椅调节装置",
            "patent_type": "utility_model", "application_date": dt.date(2023, 5, 4), "grant_date": dt.date(2023, 11, 21),
            "legal_status": "granted", "inventor_name": "陈七",
        },
        "source": {**SOURCE, "connector": "filedrop", "dept": "ip", "db": "ip", "schema": None, "table": "patent",
                   "position": "0123456789abcdef:3", "seq": 1_709_294_400_000_000_003, "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/ip/trademark": {
        "before": None, "after": {
            "registration_no": "51234567", "uscc": "91110000600037341L", "mark_name": "山城辣妹", "nice_class": 43,
            "application_date": dt.date(2020, 1, 6), "registration_date": dt.date(2021, 3, 7),
            "expiry_date": dt.date(2031, 3, 6), "status": "registered",
        },
        "source": {**SOURCE, "connector": "filedrop", "dept": "ip", "db": "ip", "schema": None, "table": "trademark",
                   "position": "0123456789abcdef:4", "seq": 1_709_294_400_000_000_004, "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/ip/ip_pledge": {
        "before": None, "after": {
            "pledge_no": "Y2026500000123", "uscc": "91110000600037341L", "ip_type": "patent", "ip_no": "CN202310123456.7",
            "pledgee": "重庆农村商业银行", "amount": 500.0, "registration_date": dt.date(2026, 1, 9),
            "start_date": dt.date(2026, 1, 9), "end_date": dt.date(2027, 1, 8), "status": "active",
            "contact_name": "陈七", "contact_phone": "13712345678",
        },
        "source": {**SOURCE, "connector": "filedrop", "dept": "ip", "db": "ip", "schema": None, "table": "ip_pledge",
                   "position": "0123456789abcdef:5", "seq": 1_709_294_400_000_000_005, "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/science/high_tech_certification": {
        "before": None, "after": {
            "certificate_no": "GR202551001234", "uscc": "91110000600037341L", "enterprise_name": "重庆某某科技有限公司",
            "technical_field": "electronic_information", "issue_date": dt.date(2025, 11, 20),
            "expiry_date": dt.date(2028, 11, 19), "status": "valid", "rd_expense_ratio": 6.2,
            "contact_name": "周八", "contact_phone": "15012345678",
        },
        "source": {**SOURCE, "connector": "filedrop", "dept": "science", "db": "science", "schema": None,
                   "table": "high_tech_certification", "position": "0123456789abcdef:6", "seq": 1_709_294_400_000_000_006,
                   "tx_id": None},
        "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "connect/heartbeat": {
        "source": "market@market", "dept": "market", "kind": "postgres", "position": "0/16B3748", "snapshotting": True,
        "snapshot_rows": 35_000, "snapshot_total": 100_000, "events": 35_012, "lag": 1_048_576, "ts_ms": 1_709_294_400_000,
    },
    "connect/source_offset": {
        "source": "market", "slot": "yurong_market", "snapshot_seq": 5, "snapshot_completed": True,
        "position": "0/5", "seq": 5, "ts_ms": 1_709_294_400_000,
        "incremental": {"tables": ["public.tax_filing", "public.tax_arrears"], "last_key": '["91500000MA5U7XXXXX", "2024-02"]'},
        "snapshot_start": None,
    },
    "dept/market/enterprise_registration": {
        "before": None, "after": REGISTRATION_ROW, "source": SOURCE, "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/market/abnormal_operation": {
        "before": ABNORMAL_ROW, "after": {**ABNORMAL_ROW, "removed_date": dt.date(2024, 3, 1)},
        "source": {**SOURCE, "table": "abnormal_operation", "tx_id": None}, "op": "u", "ts_ms": 1_709_294_400_500,
    },
    "dept/market/equity_pledge": {
        "before": None, "source": {**SOURCE, "table": "equity_pledge", "tx_id": None}, "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {
            "id": 12, "uscc": "91110000600037341L", "registration_no": "500103202406300042", "pledgor_type": "natural_person",
            "pledgor_name": "王芳", "pledgor_id_number": "11010519491231002X", "pledgee": "重庆银行", "pledged_amount": 120.5,
            "registration_date": dt.date(2024, 6, 30), "status": "valid", "cancelled_date": None, "updated_at": None,
        },
    },
    "dept/tax/tax_filing": {
        "before": None, "source": {**SOURCE, "dept": "tax", "db": "tax", "table": "tax_filing"}, "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {
            "id": 7, "uscc": "91110000600037341L", "period": "2024-02", "tax_type": "vat", "taxpayer_type": "small_scale",
            "taxable_revenue": 182_000.0, "tax_payable": 1820.0, "tax_paid": 1820.0, "filing_date": dt.date(2024, 3, 12),
            "due_date": dt.date(2024, 3, 15), "late": False, "filer_name": "李娜", "filer_phone": "13912345678",
            "tax_authority": "国家税务总局重庆市渝中区税务局", "updated_at": None,
        },
    },
    "dept/tax/tax_credit_rating": {
        "before": None, "source": {**SOURCE, "dept": "tax", "db": "tax", "table": "tax_credit_rating"},
        "op": "r", "ts_ms": 1_709_294_400_500,
        "after": {"id": 3, "uscc": "91110000600037341L", "rating_year": 2023, "rating": "B", "score": 82.5,
                  "rated_date": dt.date(2024, 4, 20), "tax_authority": "国家税务总局重庆市税务局", "reason": None, "updated_at": None},
    },
    "dept/tax/tax_arrears": {
        "before": None, "source": {**SOURCE, "dept": "tax", "db": "tax", "table": "tax_arrears"}, "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {"id": 2, "uscc": "91110000600037341L", "tax_type": "vat", "amount": 45_600.0, "late_fee": 228.0,
                  "since_date": dt.date(2024, 1, 16), "cleared_date": None, "status": "outstanding", "legal_rep_name": "张三丰",
                  "legal_rep_id_number": "34052419800101001X", "tax_authority": "国家税务总局重庆市渝中区税务局", "updated_at": None},
    },
    "dept/court/litigation_case": {
        "before": None, "source": {**SOURCE, "dept": "court", "db": "court", "table": "litigation_case"},
        "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {"id": 11, "case_no": "（2024）渝0103民初1234号", "uscc": "91110000600037341L", "role": "defendant",
                  "cause": "金融借款合同纠纷", "amount": 1_200_000.0, "court": "重庆市渝中区人民法院", "counterparty_type": "enterprise",
                  "counterparty_name": "重庆农村商业银行股份有限公司", "filed_date": dt.date(2024, 2, 2), "closed_date": None,
                  "status": "filed", "outcome": None, "updated_at": None},
    },
    "dept/court/enforcement": {
        "before": None, "source": {**SOURCE, "dept": "court", "db": "court", "table": "enforcement"}, "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {"id": 5, "case_no": "（2024）渝0103执567号", "uscc": "91110000600037341L", "basis_case_no": "（2023）渝0103民初88号",
                  "amount": 1_200_000.0, "unperformed_amount": 1_000_000.0, "court": "重庆市渝中区人民法院",
                  "filed_date": dt.date(2024, 2, 2), "closed_date": None, "status": "open", "executed_person_name": "张三丰",
                  "executed_person_id_number": "34052419800101001X", "updated_at": None},
    },
    "dept/court/dishonest_debtor": {
        "before": None, "source": {**SOURCE, "dept": "court", "db": "court", "table": "dishonest_debtor"},
        "op": "c", "ts_ms": 1_709_294_400_500,
        "after": {"id": 1, "case_no": "（2024）渝0103执567号", "uscc": "91110000600037341L", "court": "重庆市渝中区人民法院",
                  "legal_rep_name": "张三丰", "legal_rep_id_number": "34052419800101001X", "obligation": "偿还借款本金及利息",
                  "performance": "not_performed", "circumstance": "有履行能力而拒不履行生效法律文书确定义务",
                  "listed_date": dt.date(2024, 6, 1), "removed_date": None, "removal_reason": None, "updated_at": None},
    },
    "dept/environment/environmental_penalty": {
        "before": None, "source": {**SOURCE, "dept": "environment", "db": "environment", "table": "environmental_penalty"}, "op": "c",
        "ts_ms": 1_709_294_400_500,
        "after": {"id": 9, "decision_no": "渝（九龙坡）环罚〔2024〕25号", "uscc": "91110000600037341L",
                  "violation_type": "wastewater_discharge", "legal_basis": "《中华人民共和国水污染防治法》第八十三条", "amount": 120_000.0,
                  "decision_date": dt.date(2024, 5, 8), "status": "issued", "executed_date": None, "legal_rep_name": "张三丰",
                  "authority": "重庆市九龙坡区生态环境局", "updated_at": None},
    },
    "enterprise/event": {
        "event_id": "market.enterprise_registration:23803720:91110000600037341L", "uscc": "91110000600037341L",
        "dept": "market", "dataset": "enterprise_registration", "op": "c",
        "attributes": {"status": "active", "legal_rep_phone": "138****5678", "industry_code": None},
        "before": None, "source_topic": "dept.market.enterprise_registration", "source_partition": 3,
        "source_offset": 17, "position": "0/16B3748", "seq": 23_803_720, "snapshot": "false",
        "event_ts_ms": 1_709_294_400_123, "ingest_ts_ms": 1_709_294_400_900,
    },
    "enterprise/profile": {
        "uscc": "91110000600037341L", "name": "重庆某某科技有限公司", "status": "active", "district_code": "500103",
        "industry_code": "I6513", "registered_capital": 500.0, "established_date": "2015-06-01",
        "legal_rep_pseudonym": "p_" + "0" * 32, "legal_rep_id_masked": "3405**********001X",
        "legal_rep_name_masked": "张**", "legal_rep_phone_masked": "138****5678", "address_masked": "重庆市渝中区",
        "abnormal_open_ids": ["42"], "abnormal_listings_total": 1, "risk_score": 730, "risk_level": "B",
        "monthly": {"hrss.headcount": {"2024-01": 31.0, "2024-02": 29.0}, "power.kwh": {"2024-02|A1": 12000.5}},
        "open_items": {"court.enforcement": {"r1": 250000.0}}, "dated": {"penalty.safety": {"r2": {"date": "2024-02-03", "amount": 5e4}}},
        "ratings": {"tax.credit_rating": "B"}, "indicators": {"hrss.headcount.last": 29.0, "court.enforcement.open": 1.0},
        "reason_codes": ["ABNORMAL_OPERATION_LISTED"],
        "score_factors": [{"code": "ABNORMAL_OPERATION_LISTED", "points": -120, "value": "1"}],
        "source_seqs": {"market.abnormal_operation": 5}, "version": 17, "last_event_id": "e", "last_event_ts_ms": 1,
        "updated_ts_ms": 2,
    },
    "risk/change": CHANGE,
    "consent/grant": {
        "consent_id": "3f6c1a9e0b7d4e21a5c8f0d2b4e6a8c0", "bank_id": "b0001", "uscc": "91110000600037341L",
        "purpose": "post-loan monitoring (贷后监测)", "scope": ["judicial", "tax"], "start_ms": 1_709_294_400_000,
        "expiry_ms": 1_740_830_400_000, "revoked_ms": 0, "ts_ms": 1_709_294_400_123,
        "recorded_by": "consent", "evidence_ref": "auth-letter:2024/00017",
    },
    "risk/alert": {
        **CHANGE, "alert_id": "b0001/" + CHANGE["change_id"], "bank_id": "b0001", "consent_id": "c1",
        "published_ts_ms": 1_709_294_402_000,
    },
    "control/erasure_request": {
        "request_id": "0123456789abcdef0123456789abcdef", "uscc": "91110000600037341L", "requested_by": "operator",
        "requested_ts_ms": 1_709_294_400_000,
    },
    "control/erasure_applied": {
        "request_id": "0123456789abcdef0123456789abcdef", "uscc": "91110000600037341L", "app_id": "yurong-worker",
        "events_partition": 2, "events_offset": 41_207, "had_profile": True, "applied_ts_ms": 1_709_294_400_350,
    },
}


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore(AVRO_DIR)


def crc64_avro(data: bytes) -> int:
    """Rabin fingerprint exactly as written in the Avro specification ("Schema Fingerprints")."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty if fp & 1 else 0)
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_every_schema_file_is_known(store):
    files = sorted(p.relative_to(AVRO_DIR).with_suffix("").as_posix() for p in AVRO_DIR.rglob("*.avsc") if p.parent.name != "history")
    assert store.names() == files
    assert set(RECORDS) == set(files), "add a sample record for every schema"


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_round_trip(store, name):
    data = store.encode(name, RECORDS[name])
    assert store.decode(data) == (name, RECORDS[name])
    assert store.decode(data, expected=name) == (name, RECORDS[name])


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_header_is_magic_and_spec_fingerprint(store, name):
    # A consumer in another language computes the fingerprint from the .avsc alone.
    raw = json.loads((AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    canonical = to_parsing_canonical_form(parse_schema(raw, _write_hint=False))
    data = store.encode(name, RECORDS[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


def test_spec_fingerprint_of_a_primitive():
    # Cross-check of the reference implementation above: canonical form of "int" is '"int"'.
    assert crc64_avro(b'"int"').to_bytes(8, "little") == bytes.fromhex("8f5c393f1ad57572")


def _valid(store, name="enterprise/event") -> bytes:
    return store.encode(name, RECORDS[name])


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: b"", "header"),
        (lambda d: None, "header"),
        (lambda d: d[:9], "header"),
        (lambda d: b"\xc3\x02" + d[2:], "header"),
        (lambda d: b"\x00" + d, "header"),
        (lambda d: MAGIC + b"\x00" * 8 + d[10:], "unknown schema fingerprint"),
        (lambda d: d[:-1], "does not decode"),
        (lambda d: d[:10], "does not decode"),
        (lambda d: d + b"\x00", "trailing"),
    ],
    ids=["empty", "none", "short", "wrong-magic", "shifted", "unknown-fingerprint", "truncated", "header-only", "trailing"],
)
def test_malformed_bytes_raise_decode_error(store, make, fragment):
    with pytest.raises(DecodeError, match=fragment):
        store.decode(make(_valid(store)))


def test_expected_schema_mismatch(store):
    with pytest.raises(SchemaMismatchError, match="enterprise/profile"):
        store.decode(_valid(store, "enterprise/event"), expected="enterprise/profile")


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDS)), body=st.binary(max_size=64))
def test_hostile_body_after_valid_header_raises_only_decode_error(store, name, body):
    data = store.get(name).header + body
    try:
        decoded_name, _ = store.decode(data)
    except DecodeError:
        return
    assert decoded_name == name  # some short bodies are valid records; that is fine


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDS)), cut=st.integers(0, 200), garbage=st.binary(max_size=16))
def test_corrupted_valid_record_raises_only_decode_error(store, name, cut, garbage):
    data = _valid(store, name)
    cut = min(cut, len(data))
    try:
        store.decode(data[:cut] + garbage)
    except DecodeError:
        pass


@PROPERTY
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(store, data):
    try:
        store.decode(data)
    except DecodeError:
        pass


def test_unknown_schema_name_is_a_config_error(store):
    with pytest.raises(ConfigError, match="enterprise/event"):
        store.encode("enterprise/evnt", {})


def test_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SchemaStore(tmp_path / "nope")


def test_broken_schema_file_is_a_config_error(tmp_path):
    (tmp_path / "x.avsc").write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ConfigError, match="x.avsc"):
        SchemaStore(tmp_path)
