"""The online store's bytes, read without Feast: byte for byte what Feast's own code writes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import mmh3  # Feast's murmur3
import pytest

from tests.integration.feast_fixtures import import_feast

import_feast()  # first: Feast's import changes the environment, which this undoes
from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.infra.online_stores.helpers import _mmh3, _redis_key  # noqa: E402
from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: E402
from feast.protos.feast.types.Value_pb2 import DoubleList, Null, Value  # noqa: E402
from feast.type_map import feast_value_type_to_python_type  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]  # noqa: E402

from churn_mlops.serving.online.codec import (  # noqa: E402
    decode_timestamp,
    decode_value,
    entity_key,
    feature_field,
    murmur3_32,
)
from churn_mlops.serving.online.errors import FeatureStoreError  # noqa: E402

IDS = ["7590-VHVEG", "", "a", "ünïcødé-€", "x" * 300, "with space", "0"]
VALUES = [
    Value(double_val=65.5),
    Value(double_val=-0.0),
    Value(double_val=1e308),
    Value(double_val=24.0),
    Value(float_val=0.1),
    Value(float_val=-3.5),
    Value(int32_val=-7),
    Value(int32_val=2**31 - 1),
    Value(int64_val=-(2**63)),
    Value(int64_val=2**62 + 3),
    Value(bool_val=True),
    Value(bool_val=False),
    Value(string_val="Fiber optic"),
    Value(string_val=""),
    Value(string_val="Bank transfer (automatic) ✓"),
    Value(string_val="y" * 127),
    Value(string_val="z" * 300),
]


@pytest.mark.parametrize("customer_id", IDS)
def test_entity_keys_are_feasts(customer_id: str) -> None:
    proto = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])
    assert entity_key("customer_id", customer_id) == serialize_entity_key(
        proto, entity_key_serialization_version=3
    )
    assert entity_key("customer_id", customer_id) + b"churn" == _redis_key("churn", proto, 3)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: str(v).strip())
def test_scalar_values_decode_as_feast_reads_them(value: Value) -> None:
    decoded = decode_value(value.SerializeToString())
    expected = feast_value_type_to_python_type(value)
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_nan_decodes_to_nan() -> None:
    assert math.isnan(decode_value(Value(double_val=math.nan).SerializeToString()))


def test_an_empty_or_null_value_is_none() -> None:
    assert decode_value(Value().SerializeToString()) is None
    assert decode_value(Value(null_val=Null.NULL).SerializeToString()) is None


def test_a_list_value_or_broken_bytes_are_refused_by_name() -> None:
    with pytest.raises(FeatureStoreError, match="unsupported feast Value field 15"):
        decode_value(Value(double_list_val=DoubleList(val=[1.0, 2.0])).SerializeToString())
    with pytest.raises(FeatureStoreError, match="truncated"):
        decode_value(Value(string_val="cut short").SerializeToString()[:-2])
    with pytest.raises(FeatureStoreError, match="unsupported feast Value field 8"):
        decode_value(Value(unix_timestamp_val=1_765_000_000).SerializeToString())


@pytest.mark.parametrize(
    "when",
    [datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)],
)
def test_redis_timestamps_decode_as_feast_reads_them(when: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    expected = datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=UTC)  # Feast's redis.py
    assert decode_timestamp(stamp.SerializeToString()) == expected


@pytest.mark.parametrize(
    "text", ["", "a", "ab", "abc", "abcd", "customers:tenure", "customers:ünï", "z" * 41]
)
def test_murmur3_is_mmh3_and_hash_fields_are_feasts(text: str) -> None:
    assert murmur3_32(text.encode()) == mmh3.hash(text, signed=False)
    assert feature_field("customers", text) == _mmh3(f"customers:{text}")
