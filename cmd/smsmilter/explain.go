package main

func explainCommands() []command { return nil }
