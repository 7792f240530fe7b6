#!/usr/bin/env bash
# Regenerates the demo/test recordings in callpipe/samples/ with espeak-ng and sox.
# Each sample is a two-channel 8 kHz WAV like a Twilio dual-channel recording:
# channel 1 = the caller, channel 2 = the agent, speaking in turns. Beside each, NAME.txt holds
# what was said, one turn a line ("speaker<TAB>words"): the reference for word error rates.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/callpipe/samples"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# say VOICE TEXT FILE: speak TEXT into an 8 kHz mono WAV.
say() { espeak-ng -v "$1" -s 150 -w "$work/raw.wav" "$2"; sox "$work/raw.wav" -r 8000 -c 1 -b 16 "$3"; }
# silence_like SRC DST: a silent track as long as SRC.
silence_like() { sox "$1" "$2" vol 0; }

# make_call NAME CALLER_LINE AGENT_LINE [CALLER_LINE AGENT_LINE ...]
make_call() {
  local name=$1; shift
  local caller=() agent=() i=0
  : > "$out/$name.txt"
  for line in "$@"; do
    say en-us "$line" "$work/turn$i.wav"
    silence_like "$work/turn$i.wav" "$work/quiet$i.wav"
    if (( i % 2 == 0 )); then caller+=("$work/turn$i.wav"); agent+=("$work/quiet$i.wav")
      printf 'caller\t%s\n' "$line" >> "$out/$name.txt"
    else caller+=("$work/quiet$i.wav"); agent+=("$work/turn$i.wav")
      printf 'agent\t%s\n' "$line" >> "$out/$name.txt"; fi
    i=$((i + 1))
  done
  sox "${caller[@]}" "$work/caller.wav"
  sox "${agent[@]}" "$work/agent.wav"
  sox -M "$work/caller.wav" "$work/agent.wav" "$out/$name.wav"
}

make_call plumber_boston \
  "Hello, my kitchen sink is leaking and I need a plumber." \
  "Thank you for calling. Where are you located?" \
  "I live in Boston, near the harbor." \
  "We can send a plumber to Boston tomorrow morning."
make_call electrician_denver \
  "Hi, the power keeps going out in my house. I need an electrician." \
  "Sorry to hear that. Which city are you in?" \
  "I am in Denver." \
  "An electrician can be there this afternoon."
# Held out from the redaction detectors' tuning: the caller reads out a test card number
# (Luhn-valid) and a phone number, digit by digit, among ordinary lead talk.
make_call locksmith_chicago_card \
  "Hi, I am locked out of my house and I need a locksmith." \
  "We can help with that. Which city are you in?" \
  "I am in Chicago. I can pay now, my card number is four two four two, four two four two, four two four two, four two four two." \
  "Thank you. What number can we call you back on?" \
  "Call me on zero five two, three eight one, six four zero seven." \
  "A locksmith will be there within the hour."
sox -n -r 8000 -c 2 -b 16 "$out/silence.wav" trim 0 4
# A mono recording: one speaker, whoever it is (nothing is guessed).
voicemail="Hi, this is Maria from Austin. My roof is leaking, please call me back."
say en-us "$voicemail" "$out/voicemail_austin.wav"
printf 'speaker\t%s\n' "$voicemail" > "$out/voicemail_austin.txt"
ls -l "$out"
