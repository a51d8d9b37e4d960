package daemontest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// handedOut are the ports FreePort gave in this process: never twice.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort is a loopback address whose port nobody listens on now, for a
// daemon the test starts (and may restart) on a port it knows. The port is
// drawn below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range): a port from that range, free
// a moment ago, could be taken as the local port of any outgoing
// connection meanwhile (the suite makes thousands), and a child restarted
// on it failed with "address already in use".
func FreePort(t testing.TB) string {
	t.Helper()
	lo := ephemeralLow()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	if lo > 12000 {
		for range 200 {
			p := 10000 + rand.IntN(lo-10000)
			if handedOut.ports[p] {
				continue
			}
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			l.Close()
			handedOut.ports[p] = true
			return addr
		}
	}
	// No room below the range: any port the kernel gives.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 where the file cannot be read).
func ephemeralLow() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo)
	}
	return lo
}
