"""`finishline create-key / create-user / list-keys / revoke-key` (API.md "Commands")."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from app import cli
from app.db import User
from app.db.session import unit_of_work
from tests.conftest import REPO, api_client, make_settings, service_env


@pytest.fixture
def env(tmp_path, monkeypatch):
    settings = make_settings(tmp_path / "data")
    for name, value in service_env(settings).items():
        if name.startswith("FINISHLINE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.setenv(name, value)
    return settings


def run(capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    sys.stdin = io.StringIO(stdin)  # not a terminal: the password is its first line
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def test_create_key_makes_an_organisation_then_keys_in_it(env, capsys):
    code, out, err = run(capsys, "create-key", "Berlin Marathon")
    assert code == 0
    organiser = out.strip().splitlines()[-1]
    slug = re.search(r"slug (\S+)", err).group(1)
    assert organiser.startswith("fl_") and slug.startswith("berlin-marathon-")

    with api_client(env, key=organiser) as client:
        event = client.post("/api/v1/events", json={"name": "Berlin 2026"}).json()["id"]
        code, out, _ = run(capsys, "create-key", "Partner site", "--org", slug, "--scope", "partner", "--event", event)
        partner = out.strip().splitlines()[-1]
        assert code == 0
        as_partner = {"Authorization": f"Bearer {partner}"}
        assert client.get(f"/api/v1/events/{event}", headers=as_partner).status_code == 200
        assert client.get("/api/v1/events", headers=as_partner).status_code == 403

        code, out, _ = run(capsys, "list-keys", "--org", slug)
        assert code == 0 and "Partner site" in out and "Berlin Marathon" in out and partner not in out
        assert f"partner\tPartner site\t{event}" in out

        partner_id = partner.split("_")[1]
        assert run(capsys, "revoke-key", partner_id)[0] == 0
        assert client.get(f"/api/v1/events/{event}", headers=as_partner).status_code == 401
        [line] = [l for l in run(capsys, "list-keys", "--org", slug)[1].splitlines() if "Partner site" in l]
        assert not line.endswith("\t-")  # the revocation time, not "-"

    code, _, err = run(capsys, "create-key", "x", "--org", "no-such-org")
    assert code == 1 and "no-such-org" in err


def test_create_user_reads_the_password_from_stdin(env, capsys):
    assert run(capsys, "create-key", "Org")[0] == 0
    code, out, err = run(capsys, "create-user", "Ada@Example.org", "--name", "Ada", stdin="a long password\n")
    assert code == 0 and "ada@example.org" in out
    with api_client(env, with_key=False) as client, unit_of_work(client.app.state.make_session) as uow:
        user = uow.session.query(User).one()
        assert user.password_hash.startswith("$argon2id$") and user.name == "Ada"
    code, _, err = run(capsys, "create-user", "bob@example.org", stdin="short\n")
    assert code == 1 and "at least" in err


def test_the_installed_command_prints_the_key_alone_on_the_last_line(env):
    result = subprocess.run([sys.executable, "-m", "app.cli", "create-key", "Solo"], cwd=REPO,
                            env=service_env(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"fl_[0-9a-f]{26}_[A-Za-z0-9_-]{43}", result.stdout.strip().splitlines()[-1])
