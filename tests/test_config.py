"""Config: the seed's format loads; every mistake names the file, the key path and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastroute.config import (
    PrefixRule, RandomRule, config_from_dict, drop_unusable_providers, load_config,
)
from fastroute.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

SEED_STYLE = """
[server]
host      = "127.0.0.1"
port      = 8090
dashboard = true

[logging]
enabled = true
path    = "logs/requests.jsonl"

[telemetry]
enabled = false

[[providers]]
name                      = "local-llama"
format                    = "openai"
base_url                  = "http://localhost:8080/v1"
cost_per_1m_tokens        = 0.0
quality                   = 60
latency_ms                = 900
throughput_tokens_per_sec = 20

[[providers]]
name               = "openai"
format             = "openai"
base_url           = "https://api.openai.com/v1"
api_key_env        = "FASTROUTE_TEST_UNSET_KEY"
cost_per_1m_tokens = 5.0

[classifiers.keyword]
enabled = true

[classifiers.keyword.tags]
code = ["function", "class"]

[response_classifiers.refusal]
enabled = true

[[routers]]
type = "random"
candidates = [
  { provider = "local-llama", model = "llama3.2-3b" },
  { provider = "openai",      model = "gpt-4o-mini" },
]

[[routers]]
type = "prefix"
model_prefix = "gpt-"
provider = "openai"

[plugins.response-healing]
enabled = true

[plugins.pareto-router]
enabled      = false
default_tier = "medium"

[plugins.pareto-router.tiers]
low = ["local-llama"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_seed_format_loads_into_frozen_objects(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_STYLE))
    assert cfg.server.dashboard is True and cfg.logging.enabled is True
    assert [p.name for p in cfg.providers] == ["local-llama", "openai"]
    assert cfg.providers[0].latency_ms == 900.0 and isinstance(cfg.providers[0].quality, float)
    assert isinstance(cfg.routers[0], RandomRule) and cfg.routers[0].candidates[1].model == "gpt-4o-mini"
    assert isinstance(cfg.routers[1], PrefixRule)
    assert cfg.classifiers["keyword"].settings["tags"]["code"] == ["function", "class"]
    assert cfg.plugins["pareto-router"].settings["tiers"] == {"low": ["local-llama"]}
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "fastroute" / "example.toml")
    assert {p.name for p in cfg.providers} >= {"echo", "local"}


@pytest.mark.parametrize("text, path, problem", [
    ('[server]\nprot = 80\n', "server.prot", "did you mean 'port'"),
    ('[server]\nport = "80"\n', "server.port", "expected an integer, got string '80'"),
    ('[server]\ndashboard = 1\n', "server.dashboard", "expected a boolean"),
    ('[server]\nupstream_client = "curl"\n', "server.upstream_client", "must be one of lean, aiohttp, httpx"),
    ('[[providers]]\nname = "a"\n', "providers[0].format", "missing required key"),
    ('[[providers]]\nname = "a"\nformat = "openai"\n', "providers[0].base_url", "required"),
    ('[[providers]]\nname = "a"\nformat = "grpc"\nbase_url = "http://x"\n', "providers[0].format", "must be one of"),
    ('[[providers]]\nname = "a"\nformat = "openai"\nbase_url = "http://x"\nquality = "high"\n',
     "providers[0].quality", "expected a number"),
    ('[[providers]]\nname = "a"\nformat = "echo"\n[[providers]]\nname = "a"\nformat = "echo"\n',
     "providers[1].name", "duplicate provider name 'a'"),
    ('[[providers]]\nname = "a"\nformat = "echo"\n[[routers]]\ntype = "prefix"\nmodel_prefix = "x"\nprovider = "b"\n',
     "routers[0].provider", "unknown provider 'b' (known: a)"),
    ('[[providers]]\nname = "a"\nformat = "echo"\n[[routers]]\ntype = "price"\nproviders = ["a", "zz"]\n',
     "routers[0].providers[1]", "unknown provider 'zz'"),
    ('[[routers]]\ntype = "teleport"\n', "routers[0].type", "unknown router type"),
    ('[[routers]]\nmodel_prefix = "x"\n', "routers[0].type", "missing required key"),
    ('[[providers]]\nname = "a"\nformat = "echo"\n[[routers]]\ntype = "prefix"\nprovider = "a"\n',
     "routers[0].model_prefix", "missing required key"),
    ('providers = 3\n', "providers", "expected an array"),
    ('[surprise]\nx = 1\n', "surprise", "unknown key"),
    ('[[providers]]\nname = "a"\nformat = "openai"\nbase_url = "http://x"\nread_timeout = 0\n',
     "providers[0].read_timeout", "positive"),
])
def test_mistakes_name_file_key_path_and_problem(tmp_path: Path, text: str, path: str, problem: str) -> None:
    conf = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    message = str(info.value)
    assert message.startswith(f"{conf}: {path}: "), message
    assert problem in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"conf.toml: invalid TOML"):
        load_config(write(tmp_path, "[server\nport = 1"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_strict_drops_provider_whose_key_is_unset_and_its_rules() -> None:
    data = {
        "providers": [
            {"name": "paid", "format": "openai", "base_url": "https://x/v1", "api_key_env": "K_PAID", "strict": True},
            {"name": "lax", "format": "openai", "base_url": "https://y/v1", "api_key_env": "K_LAX"},
            {"name": "echo", "format": "echo"},
        ],
        "routers": [
            {"type": "prefix", "model_prefix": "gpt", "provider": "paid"},
            {"type": "random", "candidates": [{"provider": "paid", "model": "m"}, {"provider": "echo", "model": "e"}]},
            {"type": "prefix", "model_prefix": "x", "provider": "lax"},
        ],
    }
    cfg = config_from_dict(data)
    usable, warnings = drop_unusable_providers(cfg, environ={})
    assert [p.name for p in usable.providers] == ["lax", "echo"]  # lax is kept: its key is read per call
    assert [type(r).__name__ for r in usable.routers] == ["RandomRule", "PrefixRule"]
    assert usable.routers[0].candidates == (cfg.routers[1].candidates[1],)
    assert any("'paid' dropped" in w and "$K_PAID" in w for w in warnings)
    kept, warnings = drop_unusable_providers(cfg, environ={"K_PAID": "sk-1"})
    assert kept == cfg and warnings == []


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastroute", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_check_prints_providers_and_routing_table(tmp_path: Path) -> None:
    out = run_cli("check", str(ROOT / "fastroute" / "example.toml"))
    assert out.returncode == 0, out.stderr
    assert "providers:" in out.stdout and "routing (first match wins):" in out.stdout
    assert "prefix 'local'" in out.stdout and "as 'llama3.2-3b'" in out.stdout


def test_check_and_serve_refuse_a_bad_config(tmp_path: Path) -> None:
    conf = write(tmp_path, '[[providers]]\nname = "a"\nformat = "openai"\nbse_url = "http://x"\n')
    for command in ("check", "serve"):
        out = run_cli(command, str(conf))
        assert out.returncode == 2
        assert f"{conf}: providers[0].bse_url: unknown key (did you mean 'base_url'?)" in out.stderr


def test_init_writes_a_config_that_checks(tmp_path: Path) -> None:
    out = run_cli("init", str(tmp_path / "mine.toml"))
    assert out.returncode == 0, out.stderr
    assert run_cli("check", str(tmp_path / "mine.toml")).returncode == 0
    again = run_cli("init", str(tmp_path / "mine.toml"))
    assert again.returncode == 1 and "exists" in again.stderr
