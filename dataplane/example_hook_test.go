package dataplane

// RunExample is set by the external test package to its Example, so an
// internal test can run it inside a namespace.
var RunExample func()

func runExample() { RunExample() }
