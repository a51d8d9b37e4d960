//go:build !race

package main

// raceDetector reports a build with -race (race_test.go).
const raceDetector = false
