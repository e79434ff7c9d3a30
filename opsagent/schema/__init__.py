"""Declarative schema: catalog -> compare -> plan -> rehearse and verify (catalog model and dump oracle), scratch
databases, the desired-state cache, drift and extract.
"""
