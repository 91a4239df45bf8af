#!/bin/sh
# coserver alert hook: mail each FT state change (README "Metrics and alerts").
#
# Install on both CoServers and name it in the site file:
#   install -m 0755 contrib/alert-hooks/mail.sh /usr/local/lib/coserver/mail.sh
#   alert_command = ["/usr/local/lib/coserver/mail.sh", "ops@example.org"]
#
# The controller runs it with one JSON object on stdin ({"component", "old", "new", "severity",
# "ftserver", "host", "reason", "time"}) and kills it after 10 s. Without /usr/sbin/sendmail
# (any MTA: exim4, postfix, msmtp-mta) it says so on stderr, which the controller logs.
set -eu
to=${1:?usage: mail.sh ADDRESS (the event comes on stdin)}
sendmail=${SENDMAIL:-/usr/sbin/sendmail}   # $SENDMAIL: another MTA entry point (the tests' stand-in)
event=$(cat)
field() {   # one string field of the event (the controller writes flat JSON, no nesting)
    printf '%s' "$event" | sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p"
}
if [ ! -x "$sendmail" ]; then
    echo "mail.sh: no $sendmail: not mailed: $(field reason)" >&2
    exit 1
fi
{
    printf 'To: %s\n' "$to"
    printf 'Subject: [coserver %s] %s on %s: %s -> %s\n' "$(field severity)" "$(field ftserver)" \
        "$(field host)" "$(field old)" "$(field new)"
    printf 'Content-Type: text/plain; charset=utf-8\n\n'
    printf '%s\n\nat %s\n\n%s\n' "$(field reason)" "$(field time)" "$event"
} | "$sendmail" -oi -- "$to"
