"""The product document's examples, run as written with only the host (and the key
placeholder) changed: both curl commands, and the OpenAI and Anthropic SDK snippets.

The snippets are copied verbatim from the product document (``shared/seed``,
"Using API Keys").
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, clean_env
from tests.upstream_fake import TEXT, FakeUpstream

DOC_HOST = "https://your-agentrouter.com"
DOC_KEY = "sk-ar-your-api-key"

CURL_AUTHORIZATION = """\
curl https://your-agentrouter.com/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer sk-ar-your-api-key" \\
  -d '{
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Hello!"}]
  }'
"""

CURL_X_API_KEY = """\
curl https://your-agentrouter.com/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -H "x-api-key: sk-ar-your-api-key" \\
  -d '{
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Hello!"}]
  }'
"""

PYTHON_OPENAI = """\
from openai import OpenAI

client = OpenAI(
    api_key="sk-ar-your-api-key",
    base_url="https://your-agentrouter.com/v1"
)

response = client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "Hello!"}]
)
"""

PYTHON_ANTHROPIC = """\
from anthropic import Anthropic

client = Anthropic(
    api_key="sk-ar-your-api-key",
    base_url="https://your-agentrouter.com"
)

message = client.messages.create(
    model="claude-3-5-sonnet-20241022",
    max_tokens=1024,
    messages=[{"role": "user", "content": "Hello!"}]
)
"""


def localize(text: str, gateway: Gateway, key: str) -> str:
    return text.replace(DOC_HOST, gateway.url).replace(DOC_KEY, key)


@pytest.mark.parametrize("example", [CURL_AUTHORIZATION, CURL_X_API_KEY], ids=["authorization", "x-api-key"])
def test_curl_examples(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], example: str) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test (Debian package curl)"
    command = localize(example, gateway, key["key"])
    mark = fake.mark()
    # Run by a shell, exactly as a reader would paste it (line continuations and all).
    proc = subprocess.run(["bash", "-c", command], capture_output=True, timeout=60, env=clean_env(gateway.data_dir))
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == TEXT
    (rec,) = fake.since(mark)
    # curl's body, newlines and indentation included, reached the upstream unchanged.
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == "curl"
    assert rec.body == argv[argv.index("-d") + 1].encode()
    assert key["key"] not in str(rec.headers)


@pytest.mark.parametrize("snippet", [PYTHON_OPENAI, PYTHON_ANTHROPIC], ids=["openai", "anthropic"])
def test_python_snippets(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], snippet: str) -> None:
    code = localize(snippet, gateway, key["key"])
    code += textwrap.dedent(
        """
        import json
        out = response if "response" in dir() else message
        print(json.dumps(out.model_dump()))
        client.close()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=clean_env(gateway.data_dir)
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if "choices" in out:
        assert out["choices"][0]["message"]["content"] == TEXT
    else:
        assert out["content"][0]["text"] == TEXT
