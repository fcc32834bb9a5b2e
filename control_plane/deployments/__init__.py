"""Deployments: which approved model versions serve each endpoint, their traffic split, the canary
controller that moves traffic step by step (rolling back automatically), and the autoscaler."""
