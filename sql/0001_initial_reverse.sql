-- Reverse of pgqueue SQL API version 1: removes everything 0001_initial.sql
-- created, the pgqueue schema included. Jobs are deleted with their tables.
DROP SCHEMA pgqueue CASCADE;
DROP TABLE @tables@.pgqueue_job;
DROP TABLE @tables@.pgqueue_queue;
DROP TABLE @tables@.pgqueue_worker;
