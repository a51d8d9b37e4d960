//go:build race

package main

// raceDetector reports a build with -race: its shadow memory and slowdown
// make a child process of the test binary another program to measure.
const raceDetector = true
