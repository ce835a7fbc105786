"""The typed settings each stage receives and the vocabulary the stages share: kinds of test sets
and sources (kinds), allowed values (choices), the variant plan (plan), prompts, and the per-stage
settings objects (stages). Pure values: reads no file.
"""
