-- 009: alerts and notifications
--
-- Why: users asked to be told when a price crosses a level or a strategy
-- misbehaves, instead of watching the dashboard.  Alerts hold the condition,
-- alert_events record each firing (for the "why was I paged" question), and
-- notifications are the outbox the sender worker drains.  Statuses and
-- channels are enums: a fixed, short list the application switches on.

CREATE TYPE alert_status AS ENUM ('active', 'triggered', 'snoozed', 'expired', 'disabled');
CREATE TYPE notification_channel AS ENUM ('email', 'push', 'sms', 'webhook');

CREATE TABLE alerts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint       NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    instrument_id     bigint       REFERENCES instruments (id) ON DELETE CASCADE,
    strategy_id       bigint       REFERENCES strategies (id) ON DELETE CASCADE,
    name              text         NOT NULL,
    condition         jsonb        NOT NULL,
    status            alert_status NOT NULL DEFAULT 'active',
    cooldown          interval     NOT NULL DEFAULT '00:15:00'::interval,
    expires_at        timestamptz,
    last_triggered_at timestamptz,
    created_at        timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT alerts_target_check CHECK (instrument_id IS NOT NULL OR strategy_id IS NOT NULL)
);

COMMENT ON COLUMN alerts.condition IS 'e.g. {"op": "price_above", "value": 182.5} or {"op": "drawdown_above", "value": 0.1}';

CREATE INDEX idx_alerts_user_id ON alerts (user_id);
-- The price watcher only evaluates active alerts of the instruments that ticked.
CREATE INDEX idx_alerts_active_instrument ON alerts (instrument_id) WHERE status = 'active';

CREATE TABLE alert_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id       bigint        NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    triggered_at   timestamptz   NOT NULL DEFAULT now(),
    observed_value numeric(18,8),
    context        jsonb         NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX idx_alert_events_alert_time ON alert_events (alert_id, triggered_at DESC);

CREATE TABLE notification_preferences (
    user_id           bigint               NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel           notification_channel NOT NULL,
    is_enabled        boolean              NOT NULL DEFAULT true,
    address           text,
    quiet_hours_start time,
    quiet_hours_end   time,
    PRIMARY KEY (user_id, channel)
);

COMMENT ON COLUMN notification_preferences.address IS 'E-mail address, phone number or webhook URL; NULL uses the account default';

CREATE TABLE notifications (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint               NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    alert_event_id bigint               REFERENCES alert_events (id) ON DELETE SET NULL,
    channel        notification_channel NOT NULL,
    subject        text                 NOT NULL,
    body           text                 NOT NULL,
    payload        jsonb,
    status         text                 NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts       smallint             NOT NULL DEFAULT 0,
    created_at     timestamptz          NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    read_at        timestamptz
);

CREATE INDEX idx_notifications_user_unread ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;
-- The sender worker's queue: oldest queued first.
CREATE INDEX idx_notifications_queued ON notifications (created_at) WHERE status = 'queued';
