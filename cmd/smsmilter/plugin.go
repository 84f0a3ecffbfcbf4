package main

func pluginCommands() []command { return nil }
