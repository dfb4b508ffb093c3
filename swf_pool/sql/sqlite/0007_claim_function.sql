-- PostgreSQL's claim moves into a function that pins its plan; SQLite has no functions and
-- its claim names its index instead (queries/sqlite.sql). The version keeps both in step.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
