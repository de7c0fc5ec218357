#!/usr/bin/env bash
# PostgreSQL's own ceiling for decision ingest, with no client in the way: the server COPYs a file
# of gateway-shaped decision rows (seven policies evaluated, an explanation, risk factors: about
# 600 bytes, 4 JSONB columns) into
#   data-model  the migrated `decisions` table (monthly partitions, primary key + 5 indexes)
#   no-index    the same columns, no index, logged
#   unlogged    the same columns, no index, no WAL
#   narrow      7 columns of the same rows (ids, time, decision, reason, score), no index: the
#               shape of the 529k rows/s COPY figure the store issue quotes
# in text and binary COPY format. What the gateway's writer achieves (benches/store.rs,
# postgres_ingest) can only approach the first row.
#
# Usage: benches/pg_ceiling.sh [rows]   (default 200000)
# Environment: PG_URL (default postgres://postgres@127.0.0.1:5432); needs a superuser (server-side
# COPY to and from files) and writes its files under /tmp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=${1:-200000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=aigate_ceiling_$$
DATA=/tmp/$DB

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/postgres" "$@"; }
psql_db() { psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/$DB" "$@"; }
cleanup() {
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -f "$DATA".text "$DATA".bin "$DATA".narrow.text "$DATA".narrow.bin 2>/dev/null || true
}
trap cleanup EXIT

psql_admin -c "CREATE DATABASE $DB"
for migration in "$ROOT"/migrations/postgres/*.sql; do
    psql_db -f "$migration" >/dev/null
done

# Rows as the gateway writes them, generated server-side; each row's ids and timestamp differ.
psql_db <<SQL
CREATE TEMP TABLE source AS
SELECT gen_random_uuid() AS decision_id, gen_random_uuid() AS request_id,
       now() - (n % 3600) * interval '1 second' AS timestamp,
       '00000000-0000-0000-0000-000000000000'::uuid AS user_id,
       'alice@example.com' AS user_email, 'Engineering' AS user_department,
       'send_prompt' AS action, 'ai_service' AS resource_type, gen_random_uuid() AS resource_id,
       'OpenAI API' AS resource_name, 'https://api.openai.com/v1/chat/completions' AS resource_url,
       'ALLOW' AS decision, 'OpenAI API is not prohibited.' AS reason, 1.0::float AS confidence,
       55 AS risk_score,
       '{"compliance": ["SOC2"], "data_retention": "30 days"}'::jsonb AS risk_factors,
       (SELECT jsonb_agg(jsonb_build_object('policy_id', gen_random_uuid(),
                'policy_name', 'Shipped policy number ' || i, 'priority', 1000 - i * 100,
                'matched', false))
          FROM generate_series(0, 6) AS i WHERE n >= 0) AS policies_evaluated,
       NULL::uuid AS primary_policy_id, 'proxy' AS source, NULL::uuid AS device_id,
       '10.0.0.7'::inet AS ip_address, NULL::varchar AS geo_location,
       'python-httpx/0.27' AS user_agent, false AS content_classified,
       NULL::jsonb AS detected_entities, '{}'::text[] AS data_classification,
       0 AS evaluation_duration_ms,
       '{"decided_by": null, "policy_error": false, "policies": [], "exceptions_used": [],
         "facts": {"service": "openai-api", "unknown_ai": false, "signals": [
           {"kind": "domain", "signature": "api.openai.com", "service": "openai-api"},
           {"kind": "api_pattern", "signature": "/v1/chat/completions", "service": "openai-api"}],
           "content": {"format": "openai_chat", "problem": null}, "body_truncated": false}}'::jsonb
         AS explanation
  FROM generate_series(1, $ROWS) AS n;
COPY source TO '$DATA.text';
COPY source TO '$DATA.bin' (FORMAT binary);
\pset tuples_only on
SELECT 'average row: ' || pg_catalog.avg(pg_column_size(source.*))::int || ' bytes' FROM source;
CREATE TEMP TABLE narrow_source AS
SELECT decision_id, request_id, timestamp, user_id, decision, reason, risk_score FROM source;
COPY narrow_source TO '$DATA.narrow.text';
COPY narrow_source TO '$DATA.narrow.bin' (FORMAT binary);
CREATE TABLE plain_copy (LIKE decisions);
CREATE UNLOGGED TABLE unlogged_copy (LIKE decisions);
CREATE TABLE narrow_copy (LIKE narrow_source);
SQL

# Each timing is its own transaction (COPY commits at the end), after a checkpoint so one run's
# WAL does not land on the next.
measure() {
    local table=$1 format=$2 file=$3
    psql_db -c "TRUNCATE $table" -c "CHECKPOINT" >/dev/null
    local started ended
    started=$(date +%s.%N)
    psql_db -c "COPY $table FROM '$file' $format" >/dev/null
    ended=$(date +%s.%N)
    awk -v t="$table" -v f="${format:-(FORMAT text)}" -v r="$ROWS" -v s="$started" -v e="$ended" \
        'BEGIN { printf "| %s | %s | %.2f | %.0f |\n", t, f, e - s, r / (e - s) }'
}

echo "| table | format | seconds | rows/s |"
echo "|---|---|---:|---:|"
for table in decisions plain_copy unlogged_copy; do
    measure "$table" "" "$DATA.text"
    measure "$table" "(FORMAT binary)" "$DATA.bin"
done
measure narrow_copy "" "$DATA.narrow.text"
measure narrow_copy "(FORMAT binary)" "$DATA.narrow.bin"
