"""The SQLite run lock file: shared by the OS users who may write the database, and watched during a run.

The lock file takes the database file's mode and group, so a second OS user who writes the database
through its group can take the lock after the first user made the file (real users, made with
``useradd`` when the tests run as root). A lock file deleted during a run is noticed before the next
step: the run takes the lock again on a new file, or stops when another run took that one.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from sqlalchemy.engine import make_url

import summarizer

from . import procs
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows

REPO = Path(summarizer.__file__).resolve().parent.parent


@pytest.fixture
def two_users() -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd, int]]:
    """Two OS users whose primary group is nogroup, both members of a new group: (first, second, group id)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to make the second OS user")
    tag = uuid.uuid4().hex[:6]
    group, names = f"sumlk_{tag}", [f"sumlk_a_{tag}", f"sumlk_b_{tag}"]
    subprocess.run(["groupadd", group], check=True)
    try:
        for name in names:
            subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-G", group, "-s", "/usr/sbin/nologin", name],
                           check=True)
        yield pwd.getpwnam(names[0]), pwd.getpwnam(names[1]), grp.getgrnam(group).gr_gid
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", group], check=False)


def as_user(user: pwd.struct_passwd, group: int, *args: str, env: dict[str, str],
            cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m summarizer ARGS`` as ``user`` (umask 022), with an interpreter that user may run."""
    for command, extra in _interpreters():
        try:
            result = subprocess.run([*command, "-m", "summarizer", *args], capture_output=True, text=True,
                                    env=env | extra, cwd=cwd, user=user.pw_uid, group=user.pw_gid,
                                    extra_groups=[group], umask=0o022, timeout=120)
        except PermissionError:  # that user may not run this interpreter
            continue
        if "No module named" not in result.stderr:
            return result
    pytest.skip(f"no Python interpreter with summarizer's packages that user {user.pw_name} may run")


def _interpreters() -> list[tuple[list[str], dict[str, str]]]:
    # this venv's interpreter may live under /root; the system's, given this venv's packages, does not
    packages = f"{sysconfig.get_paths()['purelib']}{os.pathsep}{REPO}"
    return [([sys.executable], {}), (["/usr/bin/python3"], {"PYTHONPATH": f"{REPO}{os.pathsep}{packages}"})]


def test_a_second_os_user_of_the_group_takes_the_lock_the_first_made(two_users, app_factory):
    first, second, group = two_users
    directory = Path(tempfile.mkdtemp(prefix="sumlk-", dir="/tmp"))
    try:
        os.chown(directory, 0, group)
        os.chmod(directory, 0o775)
        db = directory / "shared.db"
        app = app_factory(make_url(f"sqlite:///{db}"))
        data = random_dataset(seed=61, rows=200, huge=False)
        load(app.dialect.engine, data)
        app.init()
        app.close()
        os.chown(db, first.pw_uid, group)
        os.chmod(db, 0o664)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
        env |= {"SUMMARIZER_DATABASE_URL": f"sqlite:///{db}", "HOME": str(directory)}
        result = as_user(first, group, "refresh", "--quiet", env=env, cwd=directory)
        assert result.returncode == 0, result.stderr
        made = Path(f"{db}.summarizer-lock").stat()  # the first user's, left in place
        result = as_user(second, group, "refresh", "--quiet", env=env, cwd=directory)
        assert result.returncode == 0, result.stderr
        assert (made.st_uid, made.st_gid, stat.S_IMODE(made.st_mode)) == (first.pw_uid, group, 0o664)
        assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                           exact=False)
        assert [run.status for run in app.runs.latest(5)] == ["succeeded", "succeeded"]
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("taken_over", [False, True], ids=["retaken", "taken-over"])
def test_a_lock_file_deleted_during_a_run_is_noticed(tmp_path, app_factory, taken_over):
    url = make_url(f"sqlite:///{tmp_path / 'run.db'}")
    app = app_factory(url)
    data = random_dataset(seed=62, rows=300, huge=False)
    tables = load(app.dialect.engine, data)
    app.init()
    app.refresh()
    before = actual_tiers(app.dialect.engine, app.schema.live().by_name())
    mutate(data, data.months[:2])
    reload_rows(app.dialect.engine, tables, data)
    lock = Path(f"{tmp_path / 'run.db'}.summarizer-lock")
    worker = procs.start(url, "refresh", cwd=tmp_path, stalled=True)  # stalls holding the lock, run recorded
    procs.wait_until(lambda: app.runs.holder(), "the run to record itself")
    lock.unlink()
    other = FileLock(str(lock))
    if taken_over:  # another run takes the lock on the new file meanwhile
        other.acquire(timeout=5)
    try:
        worker.resume()
        code = worker.finish()
    finally:
        other.release()
    assert f"the run lock file {lock} was deleted or replaced; taking the lock again" in worker.stderr
    run = app.runs.latest(1)[0]
    if taken_over:
        assert code == 1 and "another run holds it now" in worker.stderr
        assert run.status == "failed" and "lost the run lock" in (run.error or "")
        assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before
    else:
        assert code == 0, worker.stderr
        assert "took the run lock again" in worker.stderr and run.status == "succeeded"
        assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                           exact=False)
