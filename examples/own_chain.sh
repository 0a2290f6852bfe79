#!/usr/bin/env bash
# A three-agent chain in plain shell: research -> write -> edit, one curl call each.
#
# On its own it runs one topic against whatever OPENAI_BASE_URL / OPENAI_API_KEY say:
#
#   ./examples/own_chain.sh "solar power in Kenya"
#
# Run it over a whole file of topics, two at a time, with chainfleet's limits, retries, journal,
# resume and report (and --compare to see the time one-at-a-time would have taken):
#
#   chainfleet exec -i examples/topics.txt -c 2 -- ./examples/own_chain.sh "{topic}"
#   chainfleet exec -i examples/topics.txt -c 2 --compare -- ./examples/own_chain.sh "{topic}"
#
# chainfleet points OPENAI_BASE_URL at its local proxy for each run of the script; nothing here
# knows about chainfleet except the optional X-Chainfleet-Stage header, which labels each call's
# stage in the report and the progress line (without it a call is labelled by its model). The
# article goes to stdout (the item's output); a failed call fails the script (set -e, curl
# --fail-with-body), and its stderr tail becomes the item's error. Needs curl and jq.
set -euo pipefail

topic="${1:?usage: own_chain.sh TOPIC}"
model="${MODEL:-gpt-4o-mini}"
base="${OPENAI_BASE_URL:-https://api.openai.com/v1}"

# ask STAGE PROMPT: one chat completion; its text on stdout
ask() {
  jq -n --arg model "$model" --arg prompt "$2" \
    '{model: $model, messages: [{role: "user", content: $prompt}]}' |
    curl -sS --fail-with-body "$base/chat/completions" \
      -H "Authorization: Bearer ${OPENAI_API_KEY:-}" \
      -H "Content-Type: application/json" \
      -H "X-Chainfleet-Stage: $1" \
      --data-binary @- |
    jq -er '.choices[0].message.content'
}

notes=$(ask research "Research notes on: $topic. Key facts, numbers and open questions, as bullet points.")
draft=$(ask write "Write a 300-word article on $topic from these notes:
$notes")
ask edit "Edit this article for clarity and accuracy; answer with the article only:
$draft"
