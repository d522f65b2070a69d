#!/usr/bin/env bash
# Makes sure the real clients the tests drive are installed: mbsync (Debian's isync), fetchmail and swaks with its
# TLS module (scenarios/21-mbsync.test.ts, 22-fetchmail.test.ts, 24-tls-real-clients.test.ts), dig (dnsutils: the
# lab DNS's TLSA answers, src/dns/server.test.ts), curl (the MTA-STS policy host, src/dns/mta-sts-site.test.ts),
# clamd, dkimpy, and Chromium for the report's tests.
# Idempotent and quiet: nothing happens when all are there.
# Needs root and apt; without them it says so and leaves it to the scenarios, which skip with a printed reason.
set -euo pipefail
missing=()
command -v mbsync >/dev/null 2>&1 || missing+=(isync)
command -v fetchmail >/dev/null 2>&1 || missing+=(fetchmail)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || missing+=(libnet-ssleay-perl)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# ClamAV's clamd (the MX's clamav scanner, src/mx/scan/) and Python's dkimpy (an independent DKIM verifier).
[ -x /usr/sbin/clamd ] || command -v clamd >/dev/null 2>&1 || missing+=(clamav-daemon)
/usr/bin/python3 -c 'import dkim, nacl' >/dev/null 2>&1 || missing+=(python3-dkim python3-nacl)
# Dovecot as a lab mailbox server (src/real/dovecot/, scenario 35),
# and Postfix as a lab MX (src/real/postfix/, scenario 36; unshare gives it the lab DNS as its only resolver).
# Postfix as a lab MTA (scenario 37) authenticates submissions with Cyrus SASL: a sasldb made by saslpasswd2
# (sasl2-bin), PLAIN and LOGIN from libsasl2-modules.
for pkg in dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix sasl2-bin libsasl2-modules libsasl2-modules-db; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# Chromium renders the HTML report in its tests (src/report/report.test.ts, driven by playwright-core).
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then echo "peers: mbsync, fetchmail, swaks (with TLS), dig, curl, clamd, dkimpy, Dovecot, Postfix and Chromium are installed"; exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "peers: ${missing[*]} missing and no root/apt-get to install them; their scenarios will skip" >&2
  exit 0
fi
echo "peers: installing ${missing[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
# No package may start its system service (a system Dovecot or clamd listening on *:143 would take the lab's ports):
# policy-rc.d says no to every service start for the length of the install (invoke-rc.d(8)).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
install() { apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null; }
install || { apt-get update -q >/dev/null && install; }
echo "peers: ready ($(mbsync --version 2>&1 | head -1); $(fetchmail --version 2>/dev/null | head -1 | sed 's/^This is //'))"
