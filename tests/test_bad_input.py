"""The bad-input matrix: every hostile or broken input gives one clear line and a documented exit code
(`suggest`) or an error record while the batch goes on (`batch`), never a traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from disarm_tagger.cli import EXIT_ERROR, app
from test_cli import model_dir  # noqa: F401  (fixture)

GOOD = "Operators ran a messaging channel.\nSubscribers paid with card payments to unlock the posts.\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
NAV_ONLY = ("<html><body><nav><ul><li><a href='/'>Home</a></li><li><a href='/news'>News</a></li></ul></nav>"
            "<footer><a href='/privacy'>Privacy</a></footer></body></html>")  # fmt: skip

# name -> (how to make the input in tmp_path, expected exit code, a word the error must contain)
ERRORS = {
    "missing path": (lambda p: p / "absent.txt", EXIT_ERROR, "no such file"),
    "directory": (lambda p: p, EXIT_ERROR, "directory"),
    "empty file": (lambda p: _write(p, b""), EXIT_ERROR, "empty"),
    "whitespace only": (lambda p: _write(p, b" \n\t \n"), EXIT_ERROR, "whitespace"),
    "binary PNG": (lambda p: _write(p, PNG), EXIT_ERROR, "png image, not text"),
    "invalid UTF-8": (lambda p: _write(p, b"caf\xe9 \xff\xfe bad bytes"), EXIT_ERROR, "utf-8"),
    "HTML with navigation only": (lambda p: _write(p, NAV_ONLY.encode(), "page.html"), EXIT_ERROR, "no article text"),
}


def _write(folder, data: bytes, name: str = "input.txt"):
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_suggest_bad_input_is_one_line_with_exit_code(case, model_dir, tmp_path):  # noqa: F811
    make, code, word = ERRORS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    result = CliRunner().invoke(app, ["suggest", str(make(folder)), "--model", str(model_dir)])
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert word in lines[0].lower()
    assert "Traceback" not in result.output


def test_suggest_refuses_a_large_file_before_reading_it(model_dir, tmp_path):  # noqa: F811
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:  # 50 MB, sparse: cheap to make
        fh.truncate(50 * 1024 * 1024)
    result = CliRunner().invoke(app, ["suggest", str(big), "--model", str(model_dir)])
    assert result.exit_code == EXIT_ERROR and "limit" in result.stderr and "--max-bytes" in result.stderr


def test_suggest_size_limit_is_configurable(model_dir, tmp_path):  # noqa: F811
    path = _write(tmp_path, GOOD.encode())
    refused = CliRunner().invoke(app, ["suggest", str(path), "--model", str(model_dir), "--max-bytes", "10"])
    assert refused.exit_code == EXIT_ERROR
    allowed = CliRunner().invoke(app, ["suggest", str(path), "--model", str(model_dir), "--max-bytes", "1000"])
    assert allowed.exit_code == 0


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_suggest_reads_text_with_a_byte_order_mark(encoding, model_dir, tmp_path):  # noqa: F811
    path = _write(tmp_path, GOOD.encode(encoding))
    result = CliRunner().invoke(app, ["suggest", str(path), "--model", str(model_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    evidence = " ".join(e["text"] for s in json.loads(result.stdout)["suggestions"] for e in s["evidence"])
    assert "messaging channel" in evidence


@pytest.mark.parametrize("text,lang", [
    ("東京の会社が偽のアカウントを作成した。メッセージアプリで拡散した。", "ja"),
    ("Операторы создали фальшивые аккаунты. Они распространяли видео в мессенджере.", "ru"),
])  # fmt: skip
def test_suggest_non_english_warns_and_still_suggests(text, lang, model_dir, tmp_path):  # noqa: F811
    path = _write(tmp_path, text.encode())
    result = CliRunner().invoke(app, ["suggest", str(path), "--model", str(model_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert f"non-English ({lang})" in result.stderr
    assert json.loads(result.stdout)["suggestions"]


def test_batch_bad_input_matrix_gives_error_records_and_goes_on(model_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "backlog"
    folder.mkdir()
    files = {
        "good.txt": GOOD.encode(),
        "empty.txt": b"",
        "whitespace.txt": b" \n\t\n",
        "image.txt": PNG,
        "latin1.txt": b"caf\xe9 \xff\xfe bad bytes",
        "utf16.txt": GOOD.encode("utf-16"),
        "big.txt": GOOD.encode() * 50,
        "nav.html": NAV_ONLY.encode(),
        "ja.txt": "東京の会社が偽のアカウントを作成した。メッセージアプリで拡散した。".encode(),
        "ru.txt": "Операторы создали фальшивые аккаунты. Они распространяли видео.".encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(folder), "--out", str(out), "--model", str(model_dir),
                                      "--max-bytes", "1000"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(files)
    errors = {k: r["error"].lower() for k, r in records.items() if "error" in r}
    assert set(errors) == {"empty.txt", "whitespace.txt", "image.txt", "latin1.txt", "big.txt", "nav.html"}
    assert "png" in errors["image.txt"] and "utf-8" in errors["latin1.txt"] and "limit" in errors["big.txt"]
    assert "no article text" in errors["nav.html"]
    assert all("\n" not in e for e in errors.values())
    for ok in ("good.txt", "utf16.txt", "ja.txt", "ru.txt"):
        assert records[ok]["suggestions"], ok
    assert any("non-English (ja)" in w for w in records["ja.txt"].get("warnings", []))
    assert "Traceback" not in result.output


def test_batch_missing_input_and_directory_as_out_are_one_line_errors(model_dir, tmp_path):  # noqa: F811
    missing = CliRunner().invoke(app, ["batch", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl"),
                                       "--model", str(model_dir)])  # fmt: skip
    assert missing.exit_code == EXIT_ERROR and missing.stderr.startswith("error:")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": GOOD}) + "\n")
    as_dir = CliRunner().invoke(app, ["batch", str(source), "--out", str(tmp_path), "--model", str(model_dir)])
    assert as_dir.exit_code == EXIT_ERROR and as_dir.stderr.startswith("error:")
    assert "Traceback" not in missing.output + as_dir.output


def test_batch_refuses_a_50_mb_document_at_the_default_limit(model_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "backlog"
    folder.mkdir()
    (folder / "good.txt").write_text(GOOD)
    with open(folder / "huge.txt", "wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(folder), "--out", str(out), "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "limit" in records["huge.txt"]["error"] and records["good.txt"]["suggestions"]
