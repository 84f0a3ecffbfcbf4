package main

func reportCommands() []command { return nil }
