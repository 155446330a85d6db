"""Monitoring: profiles, drift, realised and estimated performance, alerts."""
