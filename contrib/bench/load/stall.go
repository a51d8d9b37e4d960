package main

import (
	"errors"
	"flag"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// stall is a relay that does not answer: it accepts every connection and
// never sends the SMTP greeting, until it is stopped. With it as embargo's
// relay the delivery worker waits on its first connections (RFC 5321
// §4.5.3.2.1 gives a client 5 minutes for the greeting) and every queued copy
// stays queued, so intake is measured alone: the accept path that Postfix's
// durable accept is (contrib/bench/run 2d). It is also what a daemon meets
// when its smarthost hangs.
func stall(args []string) error {
	fs := flag.NewFlagSet("stall", flag.ContinueOnError)
	listen := fs.String("listen", "", "host:port to accept connections on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("stall: -listen is required")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var held []net.Conn // kept open, never read or written
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return l.Close()
}
