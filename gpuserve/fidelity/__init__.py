"""Simulator fidelity: replay a scenario on the live platform, compare it with the simulation, calibrate overheads."""
