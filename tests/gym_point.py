"""2D navigation written as a plain gymnasium env with the MetaEnv protocol (as pytorch-maml-rl's
``Navigation2DEnv`` is): the adapter's reference against the batched family of the same task."""

import gymnasium
import numpy as np


class PointGoal(gymnasium.Env):
    """A point that starts at the origin and moves by its action (clipped to ±0.1 per coordinate)
    toward a goal uniform in [-0.5, 0.5]²; reward −distance after the move, done within 0.01."""

    def __init__(self, low: float = -0.5, high: float = 0.5, declare_task: bool = True):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self.low, self.high = low, high
        self.goal, self.state = np.zeros(2), np.zeros(2)
        if not declare_task:
            self.task_vector = None

    def sample_tasks(self, num_tasks):
        return [{"goal": g} for g in self.np_random.uniform(self.low, self.high, size=(num_tasks, 2))]

    def set_task(self, task):
        self.goal = np.asarray(task["goal"], dtype=np.float64)

    def task_vector(self, task):
        return np.asarray(task["goal"])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.zeros(2)
        return self.state.astype(np.float32), {}

    def step(self, action):
        self.state = self.state + np.clip(action, -0.1, 0.1)
        delta = self.state - self.goal
        return (self.state.astype(np.float32), -float(np.linalg.norm(delta)), bool((np.abs(delta) < 0.01).all()),
                False, {})
