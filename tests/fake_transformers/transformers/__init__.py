"""Stand-in for a transformers release that already ships the "aimv2" config (4.54 and later).

With it on PYTHONPATH beside tests/fake_vllm (profile 0.9), `import vllm` registers "aimv2" a
second time, and AutoConfig.register refuses it the way transformers does: the failure NVIDIA's
conda environment meets with vLLM 0.9.2 and a newer transformers. For the worker's fast tests only.
"""

__version__ = "0.0-standin"


class AutoConfig:
    _registry: dict = {"aimv2": object}

    @staticmethod
    def register(model_type, config, exist_ok=False):
        if model_type in AutoConfig._registry and not exist_ok:
            raise ValueError(
                f"'{model_type}' is already used by a Transformers config, pick another name."
            )
        AutoConfig._registry[model_type] = config
