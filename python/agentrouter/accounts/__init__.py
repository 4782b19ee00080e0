"""Accounts: people, their passwords, sessions, two-factor sign-in, OAuth identities,
invitations, mail and the audit log (see ``agentrouter.accounts.service``).

Modules: ``service`` (``AccountService``, built by ``Core.from_settings`` as
``core.accounts``), ``errors`` (each with ``status`` and ``code``), ``passwords``
(policy and Argon2id off the event loop), ``tokens`` (random tokens stored as
HMAC digests; sealing of TOTP secrets), ``mail`` (SMTP or the log and outbox),
``throttle`` (sign-in throttling on the project's limiter), ``devices`` (device
labels). The rows are in ``agentrouter.store.models``, the SQL in
``agentrouter.store.accounts``; ``agentrouter.actor`` says who is asking and
``agentrouter.audit`` keeps the audit log.

This package's ``__init__`` imports nothing, so ``agentrouter.keys`` can use its
errors without a cycle; import from the modules.
"""
