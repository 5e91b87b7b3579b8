"""The Discord side of the desk: a discord.py bot where staff work tickets, and the projector that feeds it."""
