"""node-observed's fix, in words, for each way gathering a node fails (ssh and docker alike)."""

from __future__ import annotations

import pytest

from vipcheck.checks.observed import unobserved_fix

# Each as gathering words it: testinfra's, ssh's or docker's own message (see the lab tests
# test_faulty_nodes.py and test_kind_lab.py for where these come from).
CASES = {
    "node-4: Host key verification failed.": "ssh host key is unknown or changed",
    "node-5: sudo: a password is required": "sudo asks for a password",
    "lab-worker2: docker exec failed (exit 126): the container has no /bin/sh": "has no /bin/sh",
    "lab-worker: docker exec failed (exit 1): Error response from daemon: Container 0f3 is not "
    "running": "stopped or gone: `docker start` it",
    "lab-worker: docker exec failed (exit 1): Error response from daemon: No such container: "
    "lab-worker": "stopped or gone",
    "lab-worker: docker exec failed (exit 125): unknown flag": "docker could not run the node",
    "node-2: no answer within 10 s": "did not answer in time",
    "node-3: ssh: connect to host 192.168.58.13 port 22: Connection refused": "nothing listens",
    "node-6: output truncated (no end of frame)": "dropped mid-output",
    "node-7: something else entirely": "make the node reachable over ssh",
}


@pytest.mark.parametrize(("reason", "fix"), CASES.items(), ids=list(CASES.values()))
def test_the_fix_fits_the_cause(reason: str, fix: str) -> None:
    assert fix in unobserved_fix(reason)


def test_a_docker_node_is_never_told_about_ssh() -> None:
    for reason in CASES:
        if "docker" in reason:
            assert "ssh" not in unobserved_fix(reason), reason
