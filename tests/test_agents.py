"""Real coding agents through a real fastroute, to an upstream of each provider format.

The installed ``claude`` (Claude Code) and ``codex`` (Codex CLI) run non-interactively with
nothing set but fastroute's address and a key.  The upstream (``tests/agent_stub.py``) asks
for a shell call running ``echo <nonce>``; the agent runs it and sends the output back; the
upstream answers ``the shell said: <output>``, which must be the agent's final output.

Select them with ``pytest -k agents``.  Without the CLIs they skip, unless
``FASTROUTE_REQUIRE_AGENTS=1`` (CI), where a missing CLI fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agent_stub import (
    RESULT_PREFIX, AgentStub, Recorded, last_tool_results, router_config, shell_arguments, tool_schemas,
)
from tests.conftest import FastrouteProcess

pytestmark = pytest.mark.timeout(300)

PROVIDER_FORMATS = ("openai", "anthropic", "ollama")
AGENT_TIMEOUT_S = 120
PROMPT = "Run the echo command with your shell tool and tell me what it printed."


def require_cli(name: str) -> None:
    if shutil.which(name) is None:
        reason = f"the {name} CLI is not installed (.ci/run installs it with npm)"
        if os.environ.get("FASTROUTE_REQUIRE_AGENTS") == "1":
            pytest.fail(f"{reason}, and FASTROUTE_REQUIRE_AGENTS=1")
        pytest.skip(reason)


@dataclass(frozen=True)
class Agent:
    #: its command, as installed
    name: str
    #: the dialect fastroute receives it in (the JSONL log's ``dialect``)
    dialect: str

    def command(self, router_url: str, home: Path) -> tuple[list[str], dict[str, str]]:
        """The command line and its whole environment: fastroute's address, a key, a home of its own."""
        env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        if self.name == "claude":
            env |= {"ANTHROPIC_BASE_URL": router_url, "ANTHROPIC_API_KEY": "sk-agent-test",
                    "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    "DISABLE_AUTOUPDATER": "1"}
            return [self.name, "-p", PROMPT, "--output-format", "json", "--allowedTools", "Bash"], env
        codex_home = home / ".codex"
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(f"""
model = "gpt-5-codex"
model_provider = "fastroute"

[model_providers.fastroute]
name = "fastroute"
base_url = "{router_url}/v1"
wire_api = "responses"
env_key = "FASTROUTE_KEY"
""")
        env |= {"CODEX_HOME": str(codex_home), "FASTROUTE_KEY": "sk-agent-test"}
        return [self.name, "exec", "--skip-git-repo-check", PROMPT], env

    def final_text(self, stdout: str) -> str:
        """What the agent answered the user in the end."""
        if self.name == "claude":  # --output-format json: one result object
            result = json.loads(stdout)
            assert result["is_error"] is False, result
            return result["result"]
        return stdout.strip()  # codex exec: the last message alone on stdout, the rest on stderr


AGENTS = {"claude": Agent("claude", "anthropic"), "codex": Agent("codex", "responses")}


def offers_shell(provider_format: str, request: Recorded) -> bool:
    """A request of the agent's own conversation (one that offers its shell tool), not a side request."""
    return any(shell_arguments(name, "true") is not None for name in tool_schemas(provider_format, request.body))


def run_agent(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an agent to its end; one that hangs is killed with everything it started."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=AGENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{cmd[0]} did not finish in {AGENT_TIMEOUT_S} s\nstdout:\n{stdout}\nstderr:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("provider_format", PROVIDER_FORMATS)
@pytest.mark.parametrize("agent_name", list(AGENTS))
def test_agents_run_a_shell_tool_through_fastroute(agent_name: str, provider_format: str, tmp_path: Path) -> None:
    agent = AGENTS[agent_name]
    require_cli(agent.name)
    nonce = f"fastroute-nonce-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "requests.jsonl"
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with AgentStub(nonce) as stub:
        config = tmp_path / "fastroute.toml"
        config.write_text(router_config(stub, provider_format, log_path))
        router = FastrouteProcess([str(config)]).start()
        try:
            cmd, env = agent.command(router.url, home)
            done = run_agent(cmd, env, work)
        finally:
            router.stop()  # a clean stop flushes the request log
    seen = f"{agent.name} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, seen

    turns = [r for r in stub.chats if offers_shell(provider_format, r)]
    assert len(turns) >= 2, f"the stub saw {[r.path for r in stub.chats]}\n{seen}"
    call = turns[0].reply
    assert call is not None and call.tool is not None, call
    # the agent's next request carries the command's output as a result of that very call
    results = last_tool_results(provider_format, turns[1].body["messages"])
    answered = call.tool if provider_format == "ollama" else call.call_id
    assert [ref for ref, _ in results] == [answered], results
    output = results[0][1]
    assert nonce in output.splitlines(), output  # the command's own output, not the command line
    assert agent.final_text(done.stdout) == RESULT_PREFIX + output.strip(), seen

    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(e["dialect"], e["provider"], e["status"]) for e in entries] == \
        [(agent.dialect, "agent-stub", 200)] * len(stub.chats), entries
