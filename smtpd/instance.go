package smtpd

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// instanceToken is this process's own mark, random at each start.
var instanceToken = sync.OnceValue(func() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
})

// InstanceToken is a random word, the same for every listener of this
// process, that the first line of every EHLO (and LHLO) reply carries. An
// SMTP client of the same process that finds it there is talking to its own
// listener: a relay that leads back to us, where mail would loop
// (docs/threat-model.md B9; Postfix recognises its own name in the greeting
// the same way, "mail for X loops back to myself"). It is random and
// nothing else: it tells a peer nothing about the daemon, and a relay that
// learnt it could only stop our own mail to itself.
func InstanceToken() string { return instanceToken() }

// ehloGreeting is the EHLO reply's first line after "250-": our domain, then
// free text (RFC 5321 §4.1.1.1, ehlo-ok-rsp = "250-" Domain [ SP ehlo-greet ]),
// which carries the instance token.
func ehloGreeting(domain string) string {
	return domain + " embargo " + InstanceToken()
}

// ehloHello is how go-smtp begins its EHLO and LHLO reply: "Hello" where
// RFC 5321 §4.1.1.1 wants the server's domain (conn.go handleGreet). Every
// other reply of go-smtp that starts with 250 is single-line or a HELO's
// "250 2.0.0 Hello".
var ehloHello = []byte("250-Hello ")

// ehloReply rewrites the first line of an EHLO reply, "250-Hello <name>", to
// "250-<domain> embargo <token> Hello <name>"; any other line passes as it
// is. go-smtp writes each reply line with one Write, so the line is whole.
func (c *conn) ehloReply(b []byte) []byte {
	if c.greet == "" || !bytes.HasPrefix(b, ehloHello) {
		return b
	}
	out := make([]byte, 0, len(b)+len(c.greet)+1)
	out = append(out, "250-"...)
	out = append(out, c.greet...)
	out = append(out, ' ')
	return append(out, b[len("250-"):]...)
}
