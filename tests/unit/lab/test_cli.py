"""The lab's command line refuses bad input with one clear line and an exit code, before booting."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.lab.__main__ import EXIT_NOT_RUNNING, EXIT_USAGE, main


def test_unknown_scenario_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--scenario", "nope", "--workdir", str(tmp_path / "w")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err
    assert "healthy" in err
    assert "Traceback" not in err
    assert not (tmp_path / "w" / "lab.json").exists()


def test_scenario_file_error_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("extends: healthy\nkubeProxy:\n  tcpFinTimeout: soon\n")
    assert main(["up", "--scenario", str(broken), "--workdir", str(tmp_path / "w")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab: error: ")
    assert "broken.yaml:3: kubeProxy.tcpFinTimeout" in err
    assert len(err.splitlines()) == 1


def test_status_and_down_without_a_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--workdir", str(tmp_path)]) == EXIT_NOT_RUNNING
    assert "no lab in" in capsys.readouterr().out
    assert main(["down", "--workdir", str(tmp_path)]) == 1
    assert "no lab in" in capsys.readouterr().err


def test_a_corrupt_state_file_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lab.json").write_text("{not json")
    assert main(["down", "--workdir", str(tmp_path)]) == 1
    assert "lab.json: not a lab state file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("yaml", "field", "says"),
    [
        ("  mode: iptables\n", "kubeProxy.mode", "expected one of ipvs, nftables"),
        ("  version: 1.33\n", "kubeProxy.version", "expected a release as kube-proxy's image"),
        (
            "  conntrack: {tcpCloseWaitTimeout: soon}\n",
            "kubeProxy.conntrack.tcpCloseWaitTimeout",
            "",
        ),
    ],
)
def test_bad_kube_proxy_mode_version_or_conntrack_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml: str, field: str, says: str
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("extends: healthy\nkubeProxy:\n" + yaml)
    assert main(["up", "--scenario", str(broken), "--workdir", str(tmp_path / "w")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert f"broken.yaml:3: {field}" in err
    assert says in err
    assert len(err.splitlines()) == 1


def test_an_unknown_mode_is_refused_before_booting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["up", "--scenario", "healthy", "--mode", "iptables", "--workdir", str(tmp_path)])
    assert refused.value.code == EXIT_USAGE
    assert "invalid choice: 'iptables'" in capsys.readouterr().err
    assert not (tmp_path / "lab.json").exists()


def test_migrate_without_a_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lab: error: no lab in ")
    assert "Traceback" not in err
