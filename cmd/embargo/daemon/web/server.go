package web

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Server. Every function may be nil: the endpoint then
// answers as if there were nothing to show (no advisories, no keys), or 503
// (unsubscribe).
type Options struct {
	// Logger receives one access line per request (route, status, size,
	// duration; never a query string or a token) and the errors of the
	// functions below. Default: discard.
	Logger *slog.Logger
	// Now is the clock that decides what is published. Default time.Now.
	Now func() time.Time

	// BaseURL is the public origin, e.g. "https://security.example.org",
	// used for the absolute links of the feeds. Empty: taken from each
	// request's Host header.
	BaseURL string
	// Project names the project in page titles and feeds, e.g. "Kubernetes".
	Project string
	// Version is reported as embargo_build_info{version}.
	Version string

	// Health says whether the store answers; nil error means healthy.
	Health func(ctx context.Context) error
	// Stats gives the store's gauges for /metrics.
	Stats Stats
	// Registry is what /metrics exposes: the daemon's collectors, to which
	// the server adds its own (requests, build information, Stats).
	// Default: a registry of the server's collectors alone.
	Registry *prometheus.Registry
	// Keys maps each list address to its public key, armored or binary,
	// served by WKD.
	Keys map[string][]byte
	// Unsubscribe removes the subscription named by an RFC 8058 token. It
	// returns nil, or ErrUnknownToken (answered exactly like success), or
	// another error (answered 503).
	Unsubscribe func(ctx context.Context, token string) error
	// Advisories lists the published advisories. The daemon passes only
	// disclosed incidents; the Server drops any whose Published is zero or
	// after Now all the same.
	Advisories func(ctx context.Context) ([]Advisory, error)

	// MetricsFrom are the client networks allowed to read /metrics.
	// Default: loopback only. A request carrying a proxy header (Forwarded,
	// X-Forwarded-For, X-Real-IP) is refused whatever its address.
	MetricsFrom []netip.Prefix
	// UnsubscribeMinDuration is the least time every unsubscribe POST
	// takes, so that timing tells nothing about a token. Default 250 ms.
	UnsubscribeMinDuration time.Duration
}

// Limits of the listener (docs/threat-model.md §4: every resource bounded).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	funcTimeout       = 5 * time.Second // bound on each call into the daemon
	advisoryCacheFor  = 5 * time.Second // a disclosure shows at most this late
)

// Server is the HTTP listener.
type Server struct {
	o       Options
	log     *slog.Logger
	handler http.Handler
	srv     *http.Server
	keys    *keyIndex

	requests       *prometheus.CounterVec // embargo_http_requests_total
	metricsHandler http.Handler

	// The advisories as last read, for advisoryCacheFor: public pages must
	// not turn every request into a scan of the store. Held while reading,
	// so concurrent misses read once.
	advMu   sync.Mutex
	advList []Advisory
	advAt   time.Time
}

// New returns a Server; it listens only when Serve is called. Keys that do
// not decode are logged and left out.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MetricsFrom == nil {
		opts.MetricsFrom = []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		}
	}
	if opts.UnsubscribeMinDuration <= 0 {
		opts.UnsubscribeMinDuration = 250 * time.Millisecond
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	s := &Server{o: opts, log: opts.Logger}
	s.initMetrics()
	s.keys = newKeyIndex(opts.Keys, s.log)

	mux := http.NewServeMux()
	// A "GET" pattern matches HEAD too; any other method on a known path
	// gets 405 with Allow, and unknown paths 404 (net/http ServeMux).
	s.route(mux, "GET /healthz", "healthz", s.healthz)
	s.route(mux, "GET /metrics", "metrics", s.metrics)
	s.route(mux, "GET /.well-known/openpgpkey/", "wkd", s.wkd)
	s.route(mux, "GET /unsubscribe/{token}", "unsubscribe", s.unsubscribePage)
	s.route(mux, "POST /unsubscribe/{token}", "unsubscribe", s.unsubscribe)
	s.route(mux, "GET /advisories/{$}", "advisories", s.advisoryIndex)
	s.route(mux, "GET /advisories/feed.atom", "advisories", s.atomFeed)
	s.route(mux, "GET /advisories/feed.json", "advisories", s.jsonFeed)
	s.route(mux, "GET /advisories/{name}", "advisories", s.advisory)
	s.handler = s.wrap(mux)
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// Handler returns the routes with the security headers and the access log,
// for httptest and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers on l until Shutdown, then returns http.ErrServerClosed.
func (s *Server) Serve(l net.Listener) error { return s.srv.Serve(l) }

// Shutdown stops accepting, waits for the requests in flight until ctx ends,
// and closes the listeners.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// The one inline style sheet; the CSP allows exactly it by hash, so no other
// style, script, image or frame can run even if markup were ever injected.
const css = `body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}` +
	`table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}` +
	`pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem}dt{font-weight:bold}button{font-size:1rem;padding:.4rem 1rem}`

var csp = func() string {
	sum := sha256.Sum256([]byte(css))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

// response records what the access log and the request counter need. The
// route handler fills in route and logPath: the mux passes this same writer.
type response struct {
	http.ResponseWriter
	code    int
	bytes   int64
	route   string
	logPath string
}

func (w *response) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *response) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// route registers h under pattern with a route name for logs and metrics.
func (s *Server) route(mux *http.ServeMux, pattern, name string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if rw, ok := w.(*response); ok {
			rw.route = name
		}
		h(w, r)
	})
}

// wrap adds the headers every response carries, the access log and the
// request counter.
func (s *Server) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		rw := &response{ResponseWriter: w, logPath: r.URL.Path}
		if strings.HasPrefix(r.URL.Path, "/unsubscribe/") {
			rw.logPath = "/unsubscribe/{token}" // a token is a credential: never logged, whatever the answer
		}
		next.ServeHTTP(rw, r)
		if rw.code == 0 {
			rw.code = http.StatusOK
		}
		route := rw.route
		if route == "" {
			route = "none"
		}
		s.countRequest(route, rw.code)
		level := slog.LevelInfo
		if route == "healthz" || route == "metrics" {
			level = slog.LevelDebug // scraped every few seconds
		}
		path := rw.logPath
		if len(path) > 200 {
			path = path[:200] + "…"
		}
		s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", path,
			"route", route, "status", rw.code, "bytes", rw.bytes,
			"duration_ms", time.Since(start).Milliseconds(), "remote", remoteIP(r))
	})
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// text writes a short plain-text answer.
func text(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func notFound(w http.ResponseWriter) { text(w, http.StatusNotFound, "404 page not found\n") }

// baseURL is the public origin for absolute links.
func (s *Server) baseURL(r *http.Request) string {
	if s.o.BaseURL != "" {
		return s.o.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if s.o.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), funcTimeout)
		defer cancel()
		if err := s.o.Health(ctx); err != nil {
			s.log.Warn("health check failed", "err", err)
			text(w, http.StatusServiceUnavailable, "unavailable\n")
			return
		}
	}
	text(w, http.StatusOK, "ok\n")
}

// errUnavailable is logged when a function the daemon gave is missing.
var errUnavailable = errors.New("web: not configured")
