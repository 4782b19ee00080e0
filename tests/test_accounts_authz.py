"""Object-level authorization at the service level: user A can neither read nor change
nor delete user B's keys, sessions, identities or audit events — "not found", as if
they did not exist; admins see and act on everyone's; instance keys are the admins'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrouter._core import FakeClock
from agentrouter.accounts.errors import AccountNotFound, PermissionDenied
from agentrouter.actor import INSTANCE, Actor, user_actor
from agentrouter.core import Core
from agentrouter.keys import KeyInputError, KeyNotFound
from tests.accounts_helpers import accounts_core, actor_of, registered_user, service

pytestmark = pytest.mark.store_backends


@pytest.fixture
async def acore(data_dir: Path, clock: FakeClock, store_url: str | None) -> AsyncIterator[Core]:
    core = await accounts_core(data_dir, clock, store_url=store_url)
    try:
        yield core
    finally:
        await core.close()


async def _people(core: Core) -> tuple[Actor, Actor, Actor]:
    acc = service(core)
    a = await registered_user(core, "a@example.com")
    b = await registered_user(core, "b@example.com")
    root = await registered_user(core, "root@example.com")
    admin = await acc.set_role(INSTANCE, root.user.id, "admin")
    return actor_of(a, core), actor_of(b, core), user_actor(admin, via="session:test")


async def test_members_see_and_change_only_their_own_keys(acore: Core) -> None:
    a, b, admin = await _people(acore)
    keys = acore.keys
    a_key = await keys.create(name="a's", actor=a)
    b_key = await keys.create(name="b's", actor=b)
    instance_key = await keys.create(name="instance")
    assert instance_key.row.owner is None

    assert [r.id for r in await keys.list(actor=a)] == [a_key.row.id]
    assert [r.id for r in await keys.list(actor=b, include_deleted=True)] == [b_key.row.id]
    assert {r.id for r in await keys.list(actor=admin)} == {a_key.row.id, b_key.row.id, instance_key.row.id}
    assert [r.id for r in await keys.list(actor=admin, owner=a.user_id)] == [a_key.row.id]

    for other in (b_key.row.id, instance_key.row.id, "key_doesnotexist00"):
        messages = set()
        for op in (
            keys.get(other, actor=a),
            keys.update(other, name="mine now", actor=a),
            keys.rotate(other, grace=0, actor=a),
            keys.delete(other, actor=a),
        ):
            with pytest.raises(KeyNotFound) as err:
                await op
            messages.add(str(err.value).replace(other, "ID"))
        assert messages == {"no key with id 'ID'"}  # the same answer as for a key that does not exist
    assert (await keys.get(b_key.row.id)).name == "b's" and (await keys.get(b_key.row.id)).state == "active"

    # A member's key is theirs even when they name another owner; an admin may choose.
    sneaky = await keys.create(name="for b?", owner=b.user_id, actor=a)
    assert sneaky.row.owner == a.user_id
    for_b = await keys.create(name="for b", owner=b.user_id, actor=admin)
    assert for_b.row.owner == b.user_id
    with pytest.raises(KeyInputError, match="no user"):
        await keys.create(name="ghost", owner="usr_nobody", actor=admin)

    # Admins act on everyone's keys; rotation keeps the owner.
    rotated = await keys.rotate(a_key.row.id, grace=0, actor=admin)
    assert rotated.row.owner == a.user_id
    await keys.delete(b_key.row.id, actor=admin)
    events = await service(acore).audit_events(admin, event="key_deleted")
    assert [(e.user_id, e.target, e.actor) for e in events] == [(b.user_id, b_key.row.id, admin.user_id)]


async def test_members_cannot_touch_other_peoples_sessions_identities_or_audit(acore: Core) -> None:
    acc = service(acore)
    a, b, admin = await _people(acore)
    assert b.user_id is not None and a.user_id is not None
    [b_session] = await acc.list_sessions(b)
    await acc.link_identity(b, provider="github", subject="b-gh")

    with pytest.raises(AccountNotFound):
        await acc.list_sessions(a, b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.end_session(a, b_session.id)  # not one of a's
    with pytest.raises(AccountNotFound):
        await acc.end_session(a, b_session.id, user_id=b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.end_sessions(a, user_id=b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.list_identities(a, b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.unlink_identity(a, provider="github", subject="b-gh")
    with pytest.raises(AccountNotFound):
        await acc.unlink_identity(a, provider="github", subject="b-gh", user_id=b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.audit_events(a, user_id=b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.get_user(a, b.user_id)
    with pytest.raises(AccountNotFound):
        await acc.disable_totp(a, user_id=b.user_id)
    assert [s.id for s in await acc.list_sessions(b)] == [b_session.id]  # untouched

    own = await acc.audit_events(a)
    assert own and all(e.user_id == a.user_id or e.actor == a.user_id for e in own)
    assert all(e.user_id != b.user_id for e in own)

    for admin_only in (
        acc.list_users(a),
        acc.set_role(a, b.user_id, "admin"),
        acc.set_disabled(a, b.user_id, True),
        acc.delete_user(a, b.user_id),
        acc.create_invitation(a),
        acc.list_invitations(a),
        acc.issue_reset_link(a, b.user_id),
        acc.create_user(a, email="new@example.com"),
    ):
        with pytest.raises(PermissionDenied):
            await admin_only

    # Admins see and end anyone's sessions, and read everyone's audit events.
    assert [s.id for s in await acc.list_sessions(admin, b.user_id)] == [b_session.id]
    await acc.end_session(admin, b_session.id, user_id=b.user_id)
    assert await acc.list_sessions(b) == []
    everyone = {e.user_id for e in await acc.audit_events(admin)}
    assert {a.user_id, b.user_id} <= everyone


async def test_a_manage_key_acts_as_its_owner(acore: Core) -> None:
    acc = service(acore)
    a, b, admin = await _people(acore)
    a_manage = await acore.keys.create(name="a's script", scope="manage", actor=a)
    instance_manage = await acore.keys.create(name="ops", scope="manage")
    as_a = await acc.actor_for_key(a_manage.row.id, client_ip="10.0.0.1")
    assert as_a.kind == "user" and as_a.user_id == a.user_id and as_a.via == f"key:{a_manage.row.id}"
    as_instance = await acc.actor_for_key(instance_manage.row.id)
    assert as_instance.is_admin and as_instance.user_id is None
    b_key = await acore.keys.create(name="b's", actor=b)
    with pytest.raises(KeyNotFound):
        await acore.keys.get(b_key.row.id, actor=as_a)
    # Promoted to admin, the same key sees everyone's.
    assert a.user_id is not None
    await acc.set_role(admin, a.user_id, "admin")
    promoted = await acc.actor_for_key(a_manage.row.id)
    assert (await acore.keys.get(b_key.row.id, actor=promoted)).id == b_key.row.id
