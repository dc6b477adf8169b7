"""Redaction and bounded output capture: pure units, no sandbox needed."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from runbook.core.redact import Redactor
from runbook.session.capture import StreamCapture

CANARY = "canary-Zq8T2vLx9pW4"


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    r.register("CANARY", CANARY)
    return r


@pytest.mark.parametrize(
    "text",
    [
        f"plain {CANARY} end",
        f"url {urllib.parse.quote(CANARY + '/+=')} end",
        f"json {json.dumps({'k': CANARY})}",
        base64.b64encode(CANARY.encode()).decode(),
        base64.b64encode(f"user:{CANARY}".encode()).decode(),
        base64.b64encode(f"ab{CANARY}xyz".encode()).decode(),
        base64.urlsafe_b64encode(f"a{CANARY}".encode()).decode(),
    ],
)
def test_every_encoding_is_masked(redactor: Redactor, text: str) -> None:
    out = redactor.redact(text)
    assert CANARY not in out
    for pad in ("", "a", "ab", "user:"):
        assert base64.b64encode((pad + CANARY).encode()).decode()[len(pad) + 4 :][:8] not in out


def test_url_encoded_variant_of_registered_secret() -> None:
    r = Redactor()
    secret = "p@ss/w0rd+x=1"
    r.register("DB_PASSWORD", secret)
    assert "p%40ss" not in r.redact(f"x={urllib.parse.quote(secret, safe='')}")
    assert "p%40ss" not in r.redact(f"x={urllib.parse.quote_plus(secret, safe='')}")


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("postgresql://dealix:hunter2hunter@127.0.0.1/dealix", "hunter2hunter"),
        ("token ghp_" + "a" * 36, "a" * 36),
        ("Authorization: Bearer abc.def.ghi123456", "abc.def.ghi123456"),
        ("X-API-Key: zzzzzzzzzzzz", "zzzzzzzzzzzz"),
        ("key sk-ant-" + "b" * 40, "b" * 40),
    ],
)
def test_pattern_net_catches_well_known_formats(text: str, leak: str) -> None:
    assert leak not in Redactor().redact(text)


def test_short_secret_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="shorter"):
        Redactor().register("X", "abc")


def test_redact_obj_walks_structures(redactor: Redactor) -> None:
    out = redactor.redact_obj({"a": [CANARY, {"b": f"x{CANARY}"}], CANARY: 1})
    assert CANARY not in json.dumps(out)


def test_capture_secret_split_across_chunks(redactor: Redactor, tmp_path) -> None:
    cap = StreamCapture(redactor, log_path=tmp_path / "out.log")
    data = f"before {CANARY} after\n".encode()
    for i in range(len(data)):  # one byte at a time: the worst split possible
        cap.feed(data[i : i + 1])
    text = cap.close()
    assert CANARY not in text
    assert "[redacted:CANARY]" in text


def test_capture_multibyte_split_and_invalid_bytes(redactor: Redactor) -> None:
    cap = StreamCapture(redactor)
    data = "مرحبا ✓ ünïcode\n".encode()
    for i in range(len(data)):
        cap.feed(data[i : i + 1])
    cap.feed(b"bad \xff\xfe bytes\n")
    text = cap.close()
    assert "مرحبا ✓ ünïcode" in text
    assert "bad \ufffd\ufffd bytes" in text


def test_capture_is_bounded_and_logs_everything(redactor: Redactor, tmp_path) -> None:
    log = tmp_path / "big.log"
    cap = StreamCapture(redactor, head=5, tail=5, log_path=log)
    for i in range(10_000):
        cap.feed(f"line {i} {CANARY}\n".encode())
    text = cap.close()
    assert text.count("\n") == 11
    assert "9990 lines elided" in text and str(log) in text
    logged = log.read_text().splitlines()
    assert len(logged) == 10_000
    assert logged[0].startswith("line 0 ") and logged[-1].startswith("line 9999 ")
    assert CANARY not in log.read_text()


def test_capture_cuts_endless_lines(redactor: Redactor, tmp_path) -> None:
    cap = StreamCapture(redactor, head=2, tail=2, log_path=tmp_path / "x.log")
    for _ in range(100):
        cap.feed(b"x" * 100_000)
    text = cap.close()
    assert len(text) < 20_000
    assert cap.bytes == 10_000_000
