//go:build race

package daemon_test

// raceEnabled: under the race detector the child daemons of
// TestPowerLossCommands start and stop about four times slower, so it
// fails the power at fewer points by default.
const raceEnabled = true
