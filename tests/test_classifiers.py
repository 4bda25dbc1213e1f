from __future__ import annotations

import logging

import pytest

from fastroute.canonical import ChatRequest, Message, TextPart
from fastroute.config import config_from_dict
from fastroute.errors import ConfigError
from fastroute.routing.classifiers import RefusalClassifier, build_classifiers, request_text, run_all


def test_request_text_reads_system_and_every_message() -> None:
    req = ChatRequest(model="m", system="SYS", messages=[Message("user", [TextPart("One")]),
                                                         Message("assistant", [TextPart("Two")])])
    assert request_text(req) == "SYS\nOne\nTwo"


def test_keyword_classifier_from_config() -> None:
    cfg = config_from_dict({"classifiers": {"keyword": {"enabled": True, "tags": {
        "code": ["Stack Trace", "def "], "vision": ["screenshot"], "none": []}}}})
    request, response = build_classifiers(cfg)
    assert response == []
    assert run_all(request, "my stack trace and a SCREENSHOT") == ["code", "vision"]
    assert run_all(request, "define") == []  # "def " needs its space


def test_refusal_default_and_custom_phrases() -> None:
    assert RefusalClassifier({}, ("c", "x")).classify("Sorry — I can't help with that.") == ["refusal"]
    assert RefusalClassifier({}, ("c", "x")).classify("Here you go") == []
    custom = RefusalClassifier({"phrases": ["Nope"]}, ("c", "x"))
    assert custom.classify("nope, not today") == ["refusal"]
    assert custom.classify("I can't help with that") == []  # the defaults are replaced


def test_a_failing_classifier_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        id = "broken"

        def classify(self, text: str) -> list[str]:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        assert run_all([Broken(), RefusalClassifier({}, ("c", "x"))], "I cannot help with it") == ["refusal"]
    assert "classifier 'broken' failed" in caplog.text


def test_classifier_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"classifiers.sentiment: unknown classifier"):
        build_classifiers(config_from_dict({"classifiers": {"sentiment": {"enabled": True}}}))
    with pytest.raises(ConfigError, match=r"classifiers.keyword.tags.code: expected an array of strings"):
        build_classifiers(config_from_dict({"classifiers": {"keyword": {"enabled": True, "tags": {"code": "x"}}}}))
