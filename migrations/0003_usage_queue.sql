-- When the instances are full, requests wait in the gateway (issue 15). Each row says how long
-- it waited and, for an error the gateway answered itself, the error's code (queue_timeout,
-- queue_full, no_instance_available, ...), so that a shed request is told apart from an
-- instance's own 503. Shipped migrations are never edited: add a new numbered file instead.
ALTER TABLE usage ADD COLUMN queue_ms REAL;        -- time spent waiting for a free instance slot
ALTER TABLE usage ADD COLUMN error_code TEXT;      -- the OpenAI error code of a gateway error answer
