"""`dfgr data ...` from the command line."""

import json

from dfgr_torchrec.cli import main


def test_synth_then_prepare(tmp_path, capsys):
    log, config = tmp_path / "log.tsv", tmp_path / "data.yaml"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(log),
                "--config-out",
                str(config),
                "--num-users",
                "30",
                "--num-items",
                "100",
                "--max-seq-len",
                "20",
            ]
        )
        == 0
    )
    text = config.read_text().replace("name:", f"output_dir: {tmp_path / 'prepared'}\nname:", 1)
    config.write_text(text)
    assert "synth" not in capsys.readouterr().err  # no progress bar off a terminal
    assert main(["data", "prepare", "--config", str(config), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.split("\n", 1)[1])
    assert report["users"] == 30
    assert "vocab" not in captured.err and "parse" not in captured.err
    assert main(["data", "prepare", "--config", str(config)]) == 0  # up to date: its summary
    out = capsys.readouterr().out
    assert f"{report['rows_read']:,} rows read" in out and "30 users" in out
    train = report["split"]["train"]
    assert any(line.split()[:2] == ["train", f"{train:,}"] for line in out.splitlines()), out
    assert "report.json (--json prints it)" in out


def test_prepare_reports_bad_input_with_exit_2(tmp_path, capsys):
    log = tmp_path / "log.tsv"
    log.write_text("u\ti\tt\tclick\na\tx\tlater\t1\n")
    config = tmp_path / "data.yaml"
    config.write_text(
        f"name: bad\noutput_dir: {tmp_path}\nsource: {{path: {log}, format: tsv, columns: {{user: u, item: i, timestamp: t}}}}\n"
        "actions: {click: {column: click}}\n"
    )
    assert main(["data", "prepare", "--config", str(config)]) == 2
    assert "log.tsv:2: column timestamp (t): expected an integer timestamp, got 'later'" in capsys.readouterr().err
