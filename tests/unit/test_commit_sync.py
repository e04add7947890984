"""``streams.kafka.admin.commit_sync``: a commit is retried while the group coordinator is loading
or moving (a broker that just started answers COORDINATOR_LOAD_IN_PROGRESS), and only then."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.kafka.admin import commit_sync


class Consumer:
    """Stands in for a confluent-kafka consumer whose first commits fail with ``errors``."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls: list[dict] = []

    def commit(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))


def test_a_loading_or_moving_coordinator_is_waited_for():
    c = Consumer(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR)
    offsets = [TopicPartition("t", 0, 5)]
    commit_sync(c, offsets, timeout_s=10)
    assert c.calls == [{"offsets": offsets, "asynchronous": False}] * 3


def test_without_offsets_the_consumer_positions_are_committed():
    c = Consumer(KafkaError.COORDINATOR_NOT_AVAILABLE)
    commit_sync(c, timeout_s=10)
    assert c.calls == [{"asynchronous": False}] * 2


def test_any_other_error_is_raised_at_once():
    c = Consumer(KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        commit_sync(c, [TopicPartition("t", 0, 5)], timeout_s=10)
    assert len(c.calls) == 1


def test_a_coordinator_that_never_comes_is_an_error_after_the_timeout():
    c = Consumer(*[KafkaError.COORDINATOR_LOAD_IN_PROGRESS] * 100)
    with pytest.raises(KafkaException):
        commit_sync(c, timeout_s=0.3)
    assert 1 < len(c.calls) < 100
