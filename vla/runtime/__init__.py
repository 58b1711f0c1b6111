"""Deployment: the real-time control loop, the inference worker, action chunking, handoff and the policy server."""
